// Stand-in for the front end's scripts/api.js.
export const api = new EventTarget();
