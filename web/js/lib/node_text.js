// Pure helpers for showing a node's `ui.text` in the editor (no imports: testable in Node).
// ComfyUI calls node.onExecuted(output) with the node's ui dict ({text: [...], images: [...]})
// or null for a cached node that never had ui; images render by themselves, text does not.

export const PACK_PREFIX = "SceneTelemetry_";
export const VALIDATOR_NODE = "SceneTelemetry_RunSummaryValidator";
export const TEXT_WIDGET = "scene_telemetry_text";

// The text area grows with its text up to this many rows, then scrolls: on a 320 px validator that is the verdict
// and its first problem lines (each wraps to 3-4 rows: it ends with a path); the full report is the node's output.
export const MAX_TEXT_ROWS = 12;
const DEFAULT_FONT_PX = 10; // the front end's default "Textarea widget font size" (Comfy.TextareaWidget.FontSize)
const LINE_HEIGHT_EM = 1.25; // monospace line box, a little over the browser's "normal" so no row is cut
const CHAR_WIDTH_EM = 0.6; // monospace advance per character
const TEXT_INSET_PX = 30; // node width minus the text area's usable width: widget margins, padding, scrollbar
const TEXT_PADDING_PX = 4; // .comfy-multiline-input: 2 px padding top and bottom, no border
const DOM_WIDGET_MARGIN_PX = 10; // the front end draws a DOM widget this far inside its layout box, on every side

/** Rows *lines* fill when soft-wrapped at *widthPx*, between 1 and MAX_TEXT_ROWS. */
export function textRows(lines, widthPx, fontPx = DEFAULT_FONT_PX) {
  const perRow = Math.max(1, Math.floor(widthPx / (fontPx * CHAR_WIDTH_EM)));
  const rows = lines.reduce((sum, line) => sum + Math.max(1, Math.ceil(line.length / perRow)), 0);
  return Math.min(Math.max(rows, 1), MAX_TEXT_ROWS);
}

/** Layout height in px (the DOM widget's minimum, margins included) for *lines* on a node *nodeWidth* px wide. */
export function textHeight(lines, nodeWidth, fontPx = DEFAULT_FONT_PX) {
  const rows = textRows(lines, Math.max(0, nodeWidth - TEXT_INSET_PX), fontPx);
  return Math.ceil(rows * fontPx * LINE_HEIGHT_EM + TEXT_PADDING_PX + 2 * DOM_WIDGET_MARGIN_PX);
}

function fontPxOf(element) {
  const size = element?.isConnected ? parseFloat(globalThis.getComputedStyle?.(element)?.fontSize) : NaN;
  return Number.isFinite(size) && size > 0 ? size : DEFAULT_FONT_PX;
}

// litegraph's own green/red node colours (LGraphCanvas.node_colors), so themes stay consistent.
export const VERDICT_COLORS = {
  PASS: { color: "#232", bgcolor: "#353" },
  FAIL: { color: "#322", bgcolor: "#533" },
};

export function isPackNode(name) {
  return typeof name === "string" && name.startsWith(PACK_PREFIX);
}

/** The ui text as lines: accepts null, a list of strings, or a bare string. */
export function textLines(output) {
  const text = output?.text;
  if (text == null) return [];
  return (Array.isArray(text) ? text : [text]).map(String);
}

// The first line's leading word decides the colour: nodes/validator.py puts the verdict line first
// ("OK: 12 passed, …", "FAILED: …", "UNREADABLE: …"); a "<run dir>: " prefix (render_text) is accepted too.
const VERDICT_WORDS = { PASS: "PASS", PASSED: "PASS", OK: "PASS", FAIL: "FAIL", FAILED: "FAIL", UNREADABLE: "FAIL" };
const VERDICT_RE = /(?:^|:\s+)(PASSED|PASS|OK|FAILED|FAIL|UNREADABLE)\b/;

/** "PASS" / "FAIL" from the first non-empty line, else null. */
export function verdictOf(lines) {
  const first = lines.find((line) => line.trim() !== "")?.trim().toUpperCase() ?? "";
  const match = VERDICT_RE.exec(first);
  return match ? VERDICT_WORDS[match[1]] : null;
}

function createTextWidget(node, doc) {
  if (typeof node.addDOMWidget === "function" && doc?.createElement) {
    const area = doc.createElement("textarea");
    area.readOnly = true;
    area.className = "comfy-multiline-input";
    area.style.opacity = "0.85";
    // serialize: false keeps this widget out of widgets_values and out of the API prompt.
    return node.addDOMWidget(TEXT_WIDGET, "customtext", area, {
      serialize: false,
      // Without this the front end's fixed minimum (--comfy-widget-min-height) applies and longer text is cut off.
      getMinHeight: () => textHeight(area.value.split("\n"), node.size?.[0] ?? 0, fontPxOf(area)),
      getValue: () => area.value,
      setValue: (value) => {
        area.value = value;
      },
    });
  }
  // Fallback for front ends without DOM widgets: a plain litegraph text widget, disabled.
  const widget = node.addWidget("text", TEXT_WIDGET, "", () => {}, { serialize: false });
  widget.disabled = true;
  return widget;
}

/** Show *lines* in one read-only widget on *node*, creating it on first use. */
export function showText(node, lines, doc = globalThis.document) {
  let widget = node.widgets?.find((w) => w.name === TEXT_WIDGET);
  if (!widget) {
    widget = createTextWidget(node, doc);
    widget.serialize = false;
  }
  widget.value = lines.join("\n");
  // Grow (never shrink) so the new text fits: a later run may have more lines than the first.
  const wanted = node.computeSize?.();
  if (wanted && node.size) node.setSize?.([Math.max(node.size[0], wanted[0]), Math.max(node.size[1], wanted[1])]);
  return widget;
}

const ARTIST_COLORS = Symbol("scene-telemetry.artistColors");

/** Colour the node green/red for a PASS/FAIL verdict; other text leaves it alone. */
export function applyVerdict(node, verdict) {
  const colors = VERDICT_COLORS[verdict];
  if (!colors) return false;
  // Remember the artist's own colours once: saves keep them (see keepArtistColorsInSaves).
  if (!node[ARTIST_COLORS]) node[ARTIST_COLORS] = { color: node.color, bgcolor: node.bgcolor };
  node.color = colors.color;
  node.bgcolor = colors.bgcolor;
  return true;
}

/**
 * The verdict colour is run state, like the text (which is never saved): a saved workflow keeps the artist's
 * colours, so a reloaded validator is never red without its explanation.
 */
export function keepArtistColorsInSaves(nodeType) {
  const original = nodeType.prototype.onSerialize;
  nodeType.prototype.onSerialize = function (data) {
    const result = original?.call(this, data);
    const saved = this[ARTIST_COLORS];
    if (saved && data) {
      for (const key of ["color", "bgcolor"]) {
        if (saved[key] === undefined) delete data[key];
        else data[key] = saved[key];
      }
    }
    return result;
  };
}

/** Wrap nodeType.prototype.onExecuted so this pack's nodes show their ui text (and verdict). */
export function wrapOnExecuted(nodeType, nodeData, doc = globalThis.document) {
  if (!isPackNode(nodeData?.name)) return false;
  const original = nodeType.prototype.onExecuted;
  if (nodeData.name === VALIDATOR_NODE) keepArtistColorsInSaves(nodeType);
  nodeType.prototype.onExecuted = function (output) {
    const result = original?.call(this, output);
    const lines = textLines(output);
    if (lines.length === 0) return result;
    showText(this, lines, doc);
    if (nodeData.name === VALIDATOR_NODE) applyVerdict(this, verdictOf(lines));
    this.setDirtyCanvas?.(true, true);
    return result;
  };
  return true;
}
