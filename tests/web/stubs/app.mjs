// Stand-in for the front end's scripts/app.js: records registered extensions.
export const app = {
  extensions: [],
  registerExtension(extension) {
    this.extensions.push(extension);
  },
};
