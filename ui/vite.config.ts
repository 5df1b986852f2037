// Builds the dashboard into dist/, which the gateway embeds and serves under /ui/.
import preact from "@preact/preset-vite";
import { defineConfig } from "vite";

export default defineConfig({
  base: "/ui/",
  plugins: [preact()],
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 400 },
});
