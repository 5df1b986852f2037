//! Cron schedules: a five-field cron expression (six with seconds first) in an IANA time zone,
//! and the task each tick creates. Parsing and time zones are croner's and chrono-tz's; here
//! live the rules: which tick is due, and that ticks missed while no replica ran collapse into
//! one.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, JobType};
use swarm_kit::validate::check_name;
use uuid::Uuid;

use super::NewTask;
use crate::error::TaskError;

/// A tick older than this when it is fired is one a replica missed, not one it is late for:
/// it fires once for all missed ticks, and the schedule moves on to the next tick after now.
pub const MISSED_AFTER: Duration = Duration::from_secs(2);

/// A parsed cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: Tz,
}

impl CronSchedule {
    /// Parses `expression` (five fields, or six with seconds first) and the IANA `timezone`.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, TaskError> {
        let fields = expression.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(TaskError::Invalid(format!(
                "cron must have five fields, or six with seconds first; {expression:?} has {fields}"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|error| TaskError::Invalid(format!("cron {expression:?}: {error}")))?;
        let zone = Tz::from_str(timezone).map_err(|_| {
            TaskError::Invalid(format!("timezone {timezone:?} is not an IANA time zone"))
        })?;
        Ok(Self { cron, zone })
    }

    /// Returns the first tick strictly after `after` (Unix milliseconds), if there is one.
    /// Ticks fall on whole seconds.
    ///
    /// croner searches wall-clock time. Where the clocks fall back it answers a repeated
    /// time's earlier instant, and a job that is not at a fixed time of day runs at the later
    /// one too ([`CronSchedule::repeat_of`]). So the search looks three ways, and the tick is
    /// the earliest instant found that lies after `after`:
    /// - on from `after`'s wall clock, past ticks that lie before `after` (from inside the
    ///   repeated hour's second pass croner answers its first pass), a few steps at most;
    /// - at the later instant of `after`'s own wall clock;
    /// - from the start of the repeated hour's second pass, when `after` is in its first (the
    ///   wall clock then goes back to ticks croner's search from `after` has left behind).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        /// Searches from inside a repeated hour: enough to leave the ticks already past.
        const SEARCHES: usize = 3;
        let whole_second = after - after.rem_euclid(1000);
        let from = DateTime::<Utc>::from_timestamp_millis(whole_second)?.with_timezone(&self.zone);
        let mut found = Vec::from_iter(self.repeat_of(&from));
        let second_pass = self.second_pass_after(&from).map(|start| (start, true));
        for (mut start, mut inclusive) in second_pass.into_iter().chain([(from, false)]) {
            for _ in 0..SEARCHES {
                let Ok(tick) = self.cron.find_next_occurrence(&start, inclusive) else {
                    break;
                };
                found.extend(self.repeat_of(&tick));
                found.push(tick);
                if found.iter().any(|tick| tick.timestamp_millis() > after) {
                    break;
                }
                (start, inclusive) = (tick, false);
            }
        }
        found
            .into_iter()
            .map(|tick| tick.timestamp_millis())
            .filter(|&tick| tick > after)
            .min()
    }

    /// Returns the later instant of `tick`'s wall-clock time when the clocks fall back over
    /// it, `tick` is the earlier one, and the job runs at both (croner runs a job at a fixed
    /// time of day once, at the earlier instant).
    fn repeat_of(&self, tick: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        if self.cron.determine_job_type() == JobType::FixedTime {
            return None;
        }
        let later = self
            .zone
            .from_local_datetime(&tick.naive_local())
            .latest()?;
        (later != *tick && self.cron.is_time_matching(&later).unwrap_or(false)).then_some(later)
    }

    /// Returns the first instant of a repeated hour's second pass when `at` lies in its first:
    /// the instant the clocks fall back, found to the second between `at` and the later
    /// instant of its wall clock.
    fn second_pass_after(&self, at: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        let later = self.zone.from_local_datetime(&at.naive_local()).latest()?;
        if later == *at {
            return None;
        }
        let offset_at = |seconds: i64| {
            DateTime::<Utc>::from_timestamp(seconds, 0)
                .map(|instant| instant.with_timezone(&self.zone).offset().fix())
        };
        let first_offset = offset_at(at.timestamp())?;
        let (mut before, mut since) = (at.timestamp(), later.timestamp());
        while since - before > 1 {
            let middle = before + (since - before) / 2;
            if offset_at(middle)? == first_offset {
                before = middle;
            } else {
                since = middle;
            }
        }
        Some(DateTime::<Utc>::from_timestamp(since, 0)?.with_timezone(&self.zone))
    }

    /// Returns where a schedule goes after firing `tick` at `now`: the tick after it, unless
    /// `tick` was missed (no replica ran when it came), in which case it stood for every tick
    /// missed since, and the schedule goes on from the first tick after now.
    pub fn after_firing(&self, tick: i64, now: i64) -> Option<i64> {
        let missed_after = i64::try_from(MISSED_AFTER.as_millis()).unwrap_or(i64::MAX);
        if tick < now - missed_after {
            self.next_after(now)
        } else {
            self.next_after(tick)
        }
    }
}

/// What every tick of a schedule creates: the fields of a task creation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskTemplate {
    /// 1 to 256 characters.
    pub title: String,
    /// Empty means "default".
    pub kind: String,
    /// JSON text.
    pub payload: String,
    /// 0 to 9.
    pub priority: i32,
    /// Capabilities a claiming agent must all have.
    pub required_capabilities: Vec<String>,
    /// Pins each task to one agent.
    pub pinned_agent_id: Option<Uuid>,
    /// 1 to 100.
    pub max_attempts: i32,
    /// 1 to 86400.
    pub timeout_seconds: i32,
    /// 1 to 604800.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_timeout_seconds: Option<i32>,
}

impl TaskTemplate {
    /// Takes the fields of `task` that a schedule repeats.
    pub fn of(task: &NewTask) -> Self {
        Self {
            title: task.title.clone(),
            kind: task.kind.clone(),
            payload: task.payload.clone(),
            priority: task.priority,
            required_capabilities: task.required_capabilities.clone(),
            pinned_agent_id: task.pinned_agent_id,
            max_attempts: task.max_attempts,
            timeout_seconds: task.timeout_seconds,
            execution_timeout_seconds: task.execution_timeout_seconds,
        }
    }

    /// The task a tick creates, on behalf of `user_id`.
    pub fn task(&self, user_id: Option<String>) -> NewTask {
        NewTask {
            title: self.title.clone(),
            kind: self.kind.clone(),
            payload: self.payload.clone(),
            priority: self.priority,
            required_capabilities: self.required_capabilities.clone(),
            pinned_agent_id: self.pinned_agent_id,
            user_id,
            max_attempts: self.max_attempts,
            timeout_seconds: self.timeout_seconds,
            execution_timeout_seconds: self.execution_timeout_seconds,
            ..NewTask::default()
        }
    }
}

/// A schedule as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The schedule id.
    pub id: Uuid,
    /// A unique name.
    pub name: String,
    /// The cron expression.
    pub cron: String,
    /// The IANA time zone it is read in.
    pub timezone: String,
    /// What each tick creates.
    pub task: TaskTemplate,
    /// On whose behalf its tasks are submitted.
    pub user_id: Option<String>,
    /// Whether ticks are skipped.
    pub paused: bool,
    /// The next tick.
    pub next_run_at: i64,
    /// The last tick that created a task.
    pub last_run_at: Option<i64>,
    /// When it was created.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

/// A schedule to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSchedule {
    /// 1 to 128 characters, unique.
    pub name: String,
    /// Five fields, or six with seconds first.
    pub cron: String,
    /// An IANA time zone; empty means UTC.
    pub timezone: String,
    /// What each tick creates (checked as a task creation is).
    pub task: NewTask,
    /// Whether it starts paused.
    pub paused: bool,
}

/// Changes to a schedule; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleUpdate {
    /// A new unique name.
    pub name: Option<String>,
    /// A new cron expression.
    pub cron: Option<String>,
    /// A new time zone.
    pub timezone: Option<String>,
    /// A new task.
    pub task: Option<NewTask>,
    /// Paused or not.
    pub paused: Option<bool>,
}

impl NewSchedule {
    /// Checks every rule and returns the schedule's parsed form and task template.
    pub fn validated(mut self) -> Result<(Self, CronSchedule, TaskTemplate), TaskError> {
        check_name("name", &self.name)?;
        if self.timezone.is_empty() {
            "UTC".clone_into(&mut self.timezone);
        }
        let schedule = CronSchedule::parse(&self.cron, &self.timezone)?;
        let task = self.task.clone().validated().map_err(|error| match error {
            TaskError::Invalid(reason) => TaskError::Invalid(format!("task.{reason}")),
            other => other,
        })?;
        if task.run_at.is_some() || task.delay_seconds.is_some() || !task.depends_on.is_empty() {
            return Err(TaskError::Invalid(
                "task.run_at, delay_seconds and depends_on do not apply to a schedule's tasks"
                    .into(),
            ));
        }
        let template = TaskTemplate::of(&task);
        Ok((self, schedule, template))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn five_and_six_fields_are_read_and_others_refused() {
        let daily = CronSchedule::parse("30 9 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            daily.next_after(millis("2026-03-01T00:00:00Z")),
            Some(millis("2026-03-01T08:30:00Z")),
            "09:30 in Paris is 08:30 UTC in winter"
        );
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(every_second.next_after(1_000), Some(2_000));
        for (cron, zone) in [
            ("* * * *", "UTC"),
            ("0 0 0 * * * 2030", "UTC"),
            ("61 * * * *", "UTC"),
            ("* * * * *", "Mars/Olympus"),
        ] {
            assert!(CronSchedule::parse(cron, zone).is_err(), "{cron} {zone}");
        }
    }

    #[test]
    fn daylight_saving_is_the_time_zone_database_s() {
        // Paris skips 02:00-03:00 on 2026-03-29: a 02:30 job runs once that day, after the jump.
        let schedule = CronSchedule::parse("30 2 * * *", "Europe/Paris").unwrap();
        let next = schedule.next_after(millis("2026-03-28T12:00:00Z")).unwrap();
        let following = schedule.next_after(next).unwrap();
        assert!(following - next >= 23 * 3_600_000, "one run per day");
    }

    #[test]
    fn ticks_move_forward_through_the_repeated_hour_of_a_fall_back() {
        // New York repeats 01:00-01:59 on 2026-11-01: 05:00-05:59 UTC in daylight time, then
        // 06:00-06:59 UTC in standard time.
        let quarterly = CronSchedule::parse("*/15 * * * *", "America/New_York").unwrap();
        // Fired tick by tick, a quarter-hourly job runs every quarter of an hour of real time.
        let ticks: Vec<i64> = std::iter::successors(
            quarterly.next_after(millis("2026-11-01T04:00:00Z")),
            |&tick| quarterly.next_after(tick),
        )
        .take_while(|&tick| tick <= millis("2026-11-01T08:00:00Z"))
        .collect();
        let quarters: Vec<i64> = (1..=16)
            .map(|quarter| millis("2026-11-01T04:00:00Z") + quarter * 15 * 60_000)
            .collect();
        assert_eq!(ticks, quarters);
        // From any moment, the next tick is the next quarter of an hour.
        let mut after = millis("2026-11-01T04:00:00Z");
        while after < millis("2026-11-01T08:00:00Z") {
            let next = quarterly.next_after(after).unwrap();
            assert_eq!(
                next,
                after - after % (15 * 60_000) + 15 * 60_000,
                "after {after}"
            );
            after += 5 * 60_000;
        }
        let every_second = CronSchedule::parse("* * * * * *", "America/New_York").unwrap();
        assert_eq!(
            every_second.next_after(millis("2026-11-01T05:59:59Z")),
            Some(millis("2026-11-01T06:00:00Z")),
            "from the last second of the first pass to the first of the second"
        );
        // In the repeated hour's second pass: the next quarter, not one an hour ago.
        assert_eq!(
            quarterly.next_after(millis("2026-11-01T06:10:00Z")),
            Some(millis("2026-11-01T06:15:00Z"))
        );
        // An hourly job runs at both instants of 01:00; a daily one at a fixed time, once.
        let hourly = CronSchedule::parse("0 * * * *", "America/New_York").unwrap();
        let ticks: Vec<i64> =
            std::iter::successors(hourly.next_after(millis("2026-11-01T03:30:00Z")), |&tick| {
                hourly.next_after(tick)
            })
            .take(4)
            .collect();
        let hours = ["04", "05", "06", "07"];
        let expected: Vec<i64> = hours
            .iter()
            .map(|hour| millis(&format!("2026-11-01T{hour}:00:00Z")))
            .collect();
        assert_eq!(ticks, expected);
        let daily = CronSchedule::parse("30 1 * * *", "America/New_York").unwrap();
        let first = daily.next_after(millis("2026-11-01T04:00:00Z")).unwrap();
        assert_eq!(first, millis("2026-11-01T05:30:00Z"));
        assert_eq!(
            daily.next_after(first),
            Some(millis("2026-11-02T06:30:00Z")),
            "once on the day the clocks fall back"
        );
    }

    #[test]
    fn missed_ticks_collapse_into_one() {
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            every_second.after_firing(10_000, 10_500),
            Some(11_000),
            "late, not missed"
        );
        assert_eq!(
            every_second.after_firing(10_000, 20_500),
            Some(21_000),
            "ten missed ticks fire once, then the schedule goes on from now"
        );
    }
}
