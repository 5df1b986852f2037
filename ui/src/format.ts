// How figures and times read on the page.

/** "3 s ago", "5 min ago", ... for an RFC 3339 time; "never" for none. */
export function ago(time: string | null, now = Date.now()): string {
  if (!time) return "never";
  const seconds = Math.max(0, Math.round((now - Date.parse(time)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

/** A local date and time, or a dash. */
export function when(time: string | null): string {
  return time ? new Date(time).toLocaleString() : "—";
}

/** A number with at most `digits` decimals. */
export function figure(value: number | null | undefined, digits = 1): string {
  return value === null || value === undefined
    ? "—"
    : value.toLocaleString(undefined, { maximumFractionDigits: digits });
}

/** A fraction as a percentage. */
export function percent(fraction: number | null | undefined): string {
  return fraction === null || fraction === undefined ? "—" : `${figure(fraction * 100)} %`;
}

/** Pretty JSON for a payload or a result. */
export function json(value: unknown): string {
  return value === undefined ? "" : JSON.stringify(value, null, 2);
}
