// Hash routes (`#/tasks/<id>`): every view is one page the gateway serves at /ui/, so links,
// reloads and the back button work without server-side routing.
import { useEffect, useState } from "preact/hooks";

/** The current route's path segments, such as `["tasks", "<id>"]`; empty for the overview. */
export function useRoute(): string[] {
  const [path, setPath] = useState(location.hash);
  useEffect(() => {
    const follow = () => setPath(location.hash);
    addEventListener("hashchange", follow);
    return () => removeEventListener("hashchange", follow);
  }, []);
  return path.replace(/^#\/?/, "").split("?")[0].split("/").filter(Boolean).map(decodeURIComponent);
}

/** The link to a route. */
export function href(...segments: string[]): string {
  return `#/${segments.map(encodeURIComponent).join("/")}`;
}

/** The route's query (`#/tasks?status=failed`). */
export function useQuery(): URLSearchParams {
  useRoute(); // re-render on every change of the hash
  return new URLSearchParams(location.hash.split("?")[1] ?? "");
}

/** Moves to `segments` with `params` (unset and empty ones left out). */
export function go(segments: string[], params: Record<string, string | number | undefined> = {}): void {
  const set = Object.entries(params).filter(([, value]) => value !== undefined && value !== "");
  const search = new URLSearchParams(set.map(([k, v]) => [k, String(v)])).toString();
  location.hash = href(...segments) + (search ? `?${search}` : "");
}
