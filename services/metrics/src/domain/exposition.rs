//! Prometheus text exposition (format 0.0.4) of every process's latest report: one `# HELP` and
//! `# TYPE` per metric, each series labelled with its `service` and `swarm_instance`, histograms as
//! cumulative `_bucket` series with `_sum` and `_count`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use swarm_proto::metrics::v1 as pb;

use super::aggregator::Instance;

/// One series with the process that reported it.
type ReportedSeries<'a> = (&'a Instance, &'a pb::Series);

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the latest report of every process in `instances`.
pub fn render(instances: &[Instance]) -> String {
    // Families by name; the first process to report a name fixes its help, kind and bounds.
    let mut families: BTreeMap<&str, (&pb::MetricFamily, Vec<ReportedSeries>)> = BTreeMap::new();
    for instance in instances {
        for family in &instance.families {
            let (first, series) = families
                .entry(family.name.as_str())
                .or_insert_with(|| (family, Vec::new()));
            if first.kind == family.kind && first.bounds == family.bounds {
                series.extend(family.series.iter().map(|series| (instance, series)));
            }
        }
    }
    let mut text = String::new();
    for (name, (family, series)) in families {
        let kind = match pb::MetricKind::try_from(family.kind) {
            Ok(pb::MetricKind::Counter) => "counter",
            Ok(pb::MetricKind::Gauge) => "gauge",
            Ok(pb::MetricKind::Histogram) => "histogram",
            _ => continue,
        };
        if !valid_name(name) {
            continue;
        }
        let _ = writeln!(text, "# HELP {name} {}", escape_help(&family.help));
        let _ = writeln!(text, "# TYPE {name} {kind}");
        for (instance, series) in series {
            let labels = labels(instance, series);
            if kind != "histogram" {
                let _ = writeln!(text, "{name}{{{labels}}} {}", number(series.value));
                continue;
            }
            let mut cumulative = 0u64;
            for (index, count) in series.bucket_counts.iter().enumerate() {
                cumulative += count;
                let le = family
                    .bounds
                    .get(index)
                    .map_or_else(|| "+Inf".to_owned(), |bound| number(*bound));
                let _ = writeln!(text, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(text, "{name}_sum{{{labels}}} {}", number(series.sum));
            let _ = writeln!(text, "{name}_count{{{labels}}} {cumulative}");
        }
    }
    text
}

/// The label naming the process a series comes from. Not `instance`: Prometheus gives every
/// scraped series the target's own `instance` and would rename ours `exported_instance`.
const INSTANCE_LABEL: &str = "swarm_instance";

fn labels(instance: &Instance, series: &pb::Series) -> String {
    let mut own: Vec<_> = series
        .labels
        .iter()
        .filter(|(name, _)| {
            valid_name(name) && !matches!(name.as_str(), "service" | INSTANCE_LABEL | "le")
        })
        .collect();
    own.sort_unstable();
    let mut text = format!(
        "service=\"{}\",{INSTANCE_LABEL}=\"{}\"",
        escape_label(&instance.service),
        escape_label(&instance.instance)
    );
    for (name, value) in own {
        let _ = write!(text, ",{name}=\"{}\"", escape_label(value));
    }
    text
}

/// Tells whether `name` is a valid metric or label name.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

fn escape_help(text: &str) -> String {
    text.replace('\\', r"\\").replace('\n', r"\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::Aggregator;
    use crate::domain::aggregator::tests::{buckets, report, take};

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let aggregator = Aggregator::new(Duration::from_secs(60));
        let mut counts = buckets(2);
        counts[3] = 1;
        take(
            &aggregator,
            report("gateway", "g:1", "GET /api/tasks/{id}", counts, 4.0),
        );
        let text = render(&aggregator.snapshot().instances);
        let labels = r#"service="gateway",swarm_instance="g:1",outcome="ok",route="GET /api/tasks/{id}",status="200""#;
        assert!(text.contains("# TYPE swarm_request_duration_seconds histogram\n"));
        assert!(text.contains(&format!(
            "swarm_request_duration_seconds_bucket{{{labels},le=\"0.0001\"}} 2\n"
        )));
        assert!(text.contains(&format!(
            "swarm_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 3\n"
        )));
        assert!(text.contains(&format!(
            "swarm_request_duration_seconds_count{{{labels}}} 3\n"
        )));
        assert!(text.contains(&format!(
            "swarm_request_duration_seconds_sum{{{labels}}} 0.5\n"
        )));
        assert!(text.contains(
            "# TYPE swarm_cache_hits_total counter\nswarm_cache_hits_total{service=\"gateway\",swarm_instance=\"g:1\"} 4\n"
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
        assert!(valid_name("swarm_tasks") && !valid_name("9lives") && !valid_name("a-b"));
    }
}
