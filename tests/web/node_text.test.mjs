import assert from "node:assert/strict";
import { register } from "node:module";
import { test } from "node:test";

import { FakeNode, fakeDocument, fakeNodeType } from "./fakes.mjs";

register("./hooks.mjs", import.meta.url);
const { app } = await import("./stubs/app.mjs");
await import("../../web/js/node_text.js");
const lib = await import("../../web/js/lib/node_text.js");

const validatorDef = { name: "SceneTelemetry_RunSummaryValidator" };

async function registeredType(nodeData, calls = []) {
  const NodeType = fakeNodeType(calls);
  for (const extension of app.extensions) await extension.beforeRegisterNodeDef?.(NodeType, nodeData, app);
  return NodeType;
}

test("registers one extension under the pack's namespace", () => {
  assert.deepEqual(
    app.extensions.map((e) => e.name),
    ["scene-telemetry.nodeText"],
  );
});

test("wrapped onExecuted calls the original with the node and output, and returns its result", async () => {
  const calls = [];
  const NodeType = await registeredType({ name: "SceneTelemetry_WriteDoneMarker" }, calls);
  const node = new NodeType();
  const output = { text: ["8 file(s), 0.9 MiB → scene"], images: [] };
  globalThis.document = fakeDocument;
  try {
    assert.equal(node.onExecuted(output), "original-result");
  } finally {
    delete globalThis.document;
  }
  assert.equal(calls.length, 1);
  assert.equal(calls[0].self, node);
  assert.equal(calls[0].output, output);
  assert.deepEqual(
    node.widgets.map((w) => [w.name, w.value]),
    [[lib.TEXT_WIDGET, "8 file(s), 0.9 MiB → scene"]],
  );
});

test("text lines are shown in one read-only, non-serialised widget that is reused", () => {
  const NodeType = fakeNodeType([]);
  lib.wrapOnExecuted(NodeType, { name: "SceneTelemetry_GPUSnapshot" }, fakeDocument);
  const node = new NodeType();
  node.onExecuted({ text: ["GPU 0: 1.2 GiB used", "torch peak 0.8 GiB"] });
  node.onExecuted({ text: ["GPU 0: 3.4 GiB used"] });
  const widgets = node.widgets.filter((w) => w.name === lib.TEXT_WIDGET);
  assert.equal(widgets.length, 1);
  assert.equal(widgets[0].value, "GPU 0: 3.4 GiB used");
  assert.equal(widgets[0].element.readOnly, true);
  assert.equal(widgets[0].element.tagName, "TEXTAREA");
  assert.equal(widgets[0].options.serialize, false);
  assert.equal(widgets[0].serialize, false);
  assert.deepEqual(node.size, [240, 100]);
  assert.ok(node.dirty >= 2);
});

test("null output (cached node without ui) and missing original are accepted", () => {
  class Bare extends FakeNode {}
  lib.wrapOnExecuted(Bare, { name: "SceneTelemetry_Collector" }, fakeDocument);
  const node = new Bare();
  assert.equal(node.onExecuted(null), undefined);
  assert.equal(node.onExecuted({ images: [] }), undefined);
  assert.equal(node.widgets.length, 0);
});

test("other packs' nodes are left untouched", async () => {
  const NodeType = fakeNodeType([]);
  const original = NodeType.prototype.onExecuted;
  assert.equal(lib.wrapOnExecuted(NodeType, { name: "SaveImage" }, fakeDocument), false);
  assert.equal(NodeType.prototype.onExecuted, original);
  const Other = fakeNodeType([]);
  const otherOriginal = Other.prototype.onExecuted;
  for (const extension of app.extensions) await extension.beforeRegisterNodeDef?.(Other, { name: "PreviewAny" }, app);
  assert.equal(Other.prototype.onExecuted, otherOriginal);
});

for (const [text, verdict] of [
  [["PASS: 14 fields agree"], "PASS"],
  [["", "FAIL: 2 mismatches", "FrameCount 80 != 81"], "FAIL"],
  [["pass (lower case)"], "PASS"],
  [["OK: 12 passed, 0 failed, 0 unreadable, 0 warning(s), 0 skipped"], "PASS"],
  [["FAILED: 10 passed, 2 failed, 0 unreadable, 0 warning(s), 0 skipped", "FAIL  marker FrameCount"], "FAIL"],
  [["/out/run-1: OK: 12 passed, 0 failed, 0 unreadable, 0 warning(s), 0 skipped"], "PASS"],
  [["C:\\runs\\r1: FAILED: 10 passed, 2 failed, 0 unreadable, 0 warning(s), 0 skipped"], "FAIL"],
  [["/out/run-1: UNREADABLE: 0 passed, 0 failed, 1 unreadable"], "FAIL"],
]) {
  test(`validator node turns ${verdict === "PASS" ? "green" : "red"} for ${JSON.stringify(text[0] || text[1])}`, () => {
    const NodeType = fakeNodeType([]);
    lib.wrapOnExecuted(NodeType, validatorDef, fakeDocument);
    const node = new NodeType();
    node.onExecuted({ text });
    assert.equal(node.color, lib.VERDICT_COLORS[verdict].color);
    assert.equal(node.bgcolor, lib.VERDICT_COLORS[verdict].bgcolor);
  });
}

test("verdict colour follows the latest run and ignores text without a verdict", () => {
  const NodeType = fakeNodeType([]);
  lib.wrapOnExecuted(NodeType, validatorDef, fakeDocument);
  const node = new NodeType();
  node.onExecuted({ text: ["FAIL: FrameCount differs"] });
  node.onExecuted({ text: ["PASS"] });
  assert.equal(node.bgcolor, lib.VERDICT_COLORS.PASS.bgcolor);
  node.onExecuted({ text: ["no run summary found"] });
  assert.equal(node.bgcolor, lib.VERDICT_COLORS.PASS.bgcolor);
  assert.equal(lib.verdictOf(["PASSED?"]), "PASS");
  assert.equal(lib.verdictOf(["SURPASS"]), null);
  assert.equal(lib.verdictOf(["PASSPORT photo"]), null);
  assert.equal(lib.verdictOf(["/runs/FAILED-batch: OK: 3 passed"]), "PASS");
  assert.equal(lib.verdictOf(["12 passed, 0 failed"]), null);
});

test("saves keep the artist's colours, not the verdict colour", () => {
  const NodeType = fakeNodeType([]);
  lib.wrapOnExecuted(NodeType, validatorDef, fakeDocument);
  const plain = new NodeType();
  plain.onExecuted({ text: ["FAILED: 1 failed"] });
  const saved = { color: plain.color, bgcolor: plain.bgcolor };
  plain.onSerialize(saved);
  assert.deepEqual(saved, {});
  const tinted = new NodeType();
  tinted.color = "#223";
  tinted.bgcolor = "#335";
  tinted.onExecuted({ text: ["OK: 3 passed"] });
  assert.equal(tinted.bgcolor, lib.VERDICT_COLORS.PASS.bgcolor);
  const data = { color: tinted.color, bgcolor: tinted.bgcolor };
  tinted.onSerialize(data);
  assert.deepEqual(data, { color: "#223", bgcolor: "#335" });
});

test("only the validator is coloured", () => {
  const NodeType = fakeNodeType([]);
  lib.wrapOnExecuted(NodeType, { name: "SceneTelemetry_Collector" }, fakeDocument);
  const node = new NodeType();
  node.onExecuted({ text: ["FAIL looks like a verdict but this is the collector"] });
  assert.equal(node.color, undefined);
});

test("a bare ui string is one line, not characters", () => {
  assert.deepEqual(lib.textLines({ text: "PASS" }), ["PASS"]);
  assert.deepEqual(lib.textLines(null), []);
});

test("falls back to a disabled litegraph text widget without DOM widgets", () => {
  const added = [];
  const node = {
    addWidget(type, name, value, callback, options) {
      const widget = { type, name, value, options };
      added.push(widget);
      return widget;
    },
  };
  lib.showText(node, ["a", "b"], undefined);
  assert.equal(added.length, 1);
  assert.equal(added[0].disabled, true);
  assert.equal(added[0].serialize, false);
  assert.equal(added[0].value, "a\nb");
});

test("the app import resolves to the front end's /scripts/app.js when served", async () => {
  const { readFile } = await import("node:fs/promises");
  const source = await readFile(new URL("../../web/js/node_text.js", import.meta.url), "utf8");
  const served = "http://127.0.0.1:8188/extensions/scene-telemetry/js/node_text.js";
  const specifiers = [...source.matchAll(/from\s+"([^"]+)"/g)].map((m) => new URL(m[1], served).pathname);
  assert.ok(specifiers.includes("/scripts/app.js"), specifiers.join(", "));
});

// Like LGraphNode.computeSize in the front end: a DOM widget contributes its getMinHeight().
class LayoutNode extends FakeNode {
  computeSize() {
    const widgets = this.widgets.reduce((sum, w) => sum + (w.options?.getMinHeight?.() ?? 20) + 4, 0);
    return [240, 60 + widgets];
  }
}

test("text rows follow soft wrapping at the node's width and are capped", () => {
  const perRow = Math.floor(290 / 6); // 10 px monospace: 6 px per character
  assert.equal(lib.textRows(["OK: 77 passed"], 290), 1);
  assert.equal(lib.textRows([""], 290), 1);
  assert.equal(lib.textRows(["x".repeat(perRow)], 290), 1);
  assert.equal(lib.textRows(["x".repeat(perRow + 1)], 290), 2);
  assert.equal(lib.textRows(["a", "x".repeat(3 * perRow)], 290), 4);
  assert.equal(lib.textRows(Array(40).fill("line"), 290), lib.MAX_TEXT_ROWS);
  assert.ok(lib.textRows(["x".repeat(100)], 290, 20) > lib.textRows(["x".repeat(100)], 290, 10));
  assert.ok(lib.textHeight(["a", "b"], 320) > lib.textHeight(["a"], 320));
});

test("the text widget asks for the height its text needs, so a failed verdict is not cut off", () => {
  const NodeType = class extends LayoutNode {};
  lib.wrapOnExecuted(NodeType, validatorDef, fakeDocument);
  const node = new NodeType();
  node.size = [320, 130];
  node.onExecuted({ text: ["OK: 77 passed, 0 failed, 0 unreadable, 0 warning(s), 0 skipped"] });
  const widget = node.widgets.find((w) => w.name === lib.TEXT_WIDGET);
  const okHeight = widget.options.getMinHeight();
  const okSize = node.size[1];
  assert.equal(okHeight, lib.textHeight([widget.value], 320));
  const problem = "FAIL  summary-field     SceneCount: summary=2 metadata=1 - summary and metadata disagree (/out/run)";
  node.onExecuted({ text: ["FAILED: 75 passed, 2 failed, 0 unreadable, 0 warning(s), 0 skipped", problem, problem] });
  assert.ok(widget.options.getMinHeight() > okHeight);
  assert.ok(node.size[1] > okSize, `node did not grow: ${node.size}`);
  assert.equal(node.size[1], node.computeSize()[1]);
  const failSize = node.size[1];
  node.onExecuted({ text: ["OK"] });
  assert.equal(node.size[1], failSize, "a shorter text keeps the size the artist sees");
});
