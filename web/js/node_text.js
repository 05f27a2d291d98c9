// Shows the ui text of scene-telemetry nodes (marker summary, GPU line, validator verdict) on the node.
// Served at /extensions/<pack folder>/js/, so ../../../scripts/ is the front end's /scripts/.
import { app } from "../../../scripts/app.js";
import { wrapOnExecuted } from "./lib/node_text.js";

app.registerExtension({
  name: "scene-telemetry.nodeText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    wrapOnExecuted(nodeType, nodeData);
  },
});
