// Minimal LGraphNode / DOM stand-ins with the members the extension touches.
export class FakeTextArea {
  constructor() {
    this.value = "";
    this.readOnly = false;
    this.style = {};
  }
}

export const fakeDocument = {
  created: [],
  createElement(tag) {
    const element = new FakeTextArea();
    element.tagName = tag.toUpperCase();
    this.created.push(element);
    return element;
  },
};

// Like the front end's DOM widget: value goes through options.getValue / setValue.
export class FakeNode {
  constructor() {
    this.widgets = [];
    this.size = [200, 80];
    this.dirty = 0;
  }
  addDOMWidget(name, type, element, options) {
    const widget = {
      name,
      type,
      element,
      options,
      get value() {
        return options.getValue();
      },
      set value(v) {
        options.setValue(v);
      },
    };
    this.widgets.push(widget);
    return widget;
  }
  computeSize() {
    return [240, 60 + 40 * this.widgets.length];
  }
  setSize(size) {
    this.size = size;
  }
  setDirtyCanvas() {
    this.dirty += 1;
  }
}

/** A node type whose prototype has an onExecuted that records its calls (like another extension's). */
export function fakeNodeType(calls) {
  class NodeType extends FakeNode {}
  NodeType.prototype.onExecuted = function (output) {
    calls.push({ self: this, output });
    return "original-result";
  };
  return NodeType;
}
