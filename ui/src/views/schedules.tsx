// Cron schedules: each one's expression and zone, what it creates, its next and last run, and
// pause or resume.
import { useState } from "preact/hooks";
import { type ApiError, call, type Page, type Schedule } from "../api";
import { when } from "../format";
import { usePolled } from "../hooks";
import { go, useQuery } from "../router";
import { Pager, Refusal, Table } from "./common";

export function SchedulesView() {
  const page = Number(useQuery().get("page") ?? "1");
  const path = `/api/schedules?page=${page}&per_page=20`;
  const schedules = usePolled(() => call<Page<Schedule>>("GET", path), [path], 5000);
  const [refusal, setRefusal] = useState<ApiError | null>(null);
  const toggle = (schedule: Schedule) =>
    call("POST", `/api/schedules/${schedule.id}/${schedule.paused ? "resume" : "pause"}`).then(
      () => {
        setRefusal(null);
        schedules.reload();
      },
      (error: ApiError) => setRefusal(error),
    );
  return (
    <>
      <h1>Schedules</h1>
      <Refusal error={refusal ?? schedules.error} />
      {schedules.data && (
        <>
          <Table columns={["Name", "When", { label: "Creates", wide: true }, "Next run", { label: "Last run", wide: true }, "State"]}>
                {schedules.data.items.map((schedule) => (
                  <tr key={schedule.id} data-schedule={schedule.name}>
                    <td>{schedule.name}</td>
                    <td>
                      <code>{schedule.cron}</code> <span class="muted">{schedule.timezone}</span>
                    </td>
                    <td class="wide">
                      {schedule.task?.title} <span class="muted">({schedule.task?.kind})</span>
                    </td>
                    <td>{schedule.paused ? "paused" : when(schedule.next_run_at)}</td>
                    <td class="wide">{when(schedule.last_run_at)}</td>
                    <td>
                      <button type="button" class="quiet" onClick={() => toggle(schedule)}>
                        {schedule.paused ? "Resume" : "Pause"}
                      </button>
                    </td>
                  </tr>
                ))}
          </Table>
          {schedules.data.items.length === 0 && <p class="muted">No schedules yet.</p>}
          <Pager page={schedules.data} onPage={(next) => go(["schedules"], { page: next })} />
        </>
      )}
    </>
  );
}
