// Pieces the views share: a status badge, a progress bar, pagination and a refusal notice.
import type { ComponentChildren } from "preact";
import type { ApiError, Page } from "../api";

export function Status({ status }: { status: string }) {
  return <span class={`badge status-${status}`}>{status}</span>;
}

export function ProgressBar({ percent, label }: { percent: number; label: string }) {
  return (
    <span class="progress">
      <progress max={100} value={percent} aria-label={label} />
      <span>{percent} %</span>
    </span>
  );
}

export function Pager<T>({ page, onPage }: { page: Page<T>; onPage: (page: number) => void }) {
  return (
    <nav class="pager" aria-label="Pages">
      <button type="button" disabled={page.page <= 1} onClick={() => onPage(page.page - 1)}>
        Previous
      </button>
      <span>
        Page {page.page} of {Math.max(1, page.pages)} · {page.total} in all
      </span>
      <button type="button" disabled={page.page >= page.pages} onClick={() => onPage(page.page + 1)}>
        Next
      </button>
    </nav>
  );
}

export function Refusal({ error }: { error: ApiError | null }) {
  return error ? (
    <p role="alert" class="error">
      {error.status ? `${error.status} ${error.code}: ` : ""}
      {error.message}
    </p>
  ) : null;
}

/** A status filter: "any", or one of `statuses`. */
export function StatusSelect({
  value,
  statuses,
  onChange,
}: {
  value: string;
  statuses: readonly string[];
  onChange: (status: string) => void;
}) {
  return (
    <label>
      Status
      <select value={value} onChange={(event) => onChange((event.target as HTMLSelectElement).value)}>
        <option value="">any</option>
        {statuses.map((name) => (
          <option key={name} value={name}>
            {name}
          </option>
        ))}
      </select>
    </label>
  );
}

/** A column heading; a `wide` one is left out on a phone. */
export type Column = string | { label: string; wide: true };

/** A table in a frame that scrolls sideways, with its column headings and its rows. */
export function Table({ columns, children }: { columns: Column[]; children: ComponentChildren }) {
  return (
    <div class="table-wrap">
      <table>
        <thead>
          <tr>
            {columns.map((column) =>
              typeof column === "string" ? (
                <th key={column} scope="col">
                  {column}
                </th>
              ) : (
                <th key={column.label} scope="col" class="wide">
                  {column.label}
                </th>
              ),
            )}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}
