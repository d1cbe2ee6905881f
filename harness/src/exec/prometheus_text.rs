//! Reading the Prometheus text exposition format, enough to compare counters between scrapes.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape: the samples and the declared type of each metric family.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Exposition {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// Names of the counter families (their samples end in `_total`).
    pub(crate) fn counters(&self) -> Vec<&str> {
        self.types
            .iter()
            .filter(|(_, kind)| kind.as_str() == "counter")
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Every metric family named in the scrape: declared by `# TYPE`, or a sample's name and,
    /// for `_total`, `_bucket`, `_sum`, `_count` and `_created` samples, their family's.
    pub(crate) fn families(&self) -> BTreeSet<String> {
        let mut families: BTreeSet<String> = self.types.keys().cloned().collect();
        for sample in &self.samples {
            families.insert(sample.name.clone());
            for suffix in ["_total", "_bucket", "_sum", "_count", "_created"] {
                if let Some(base) = sample.name.strip_suffix(suffix) {
                    families.insert(base.to_string());
                }
            }
        }
        families
    }

    /// The value of the sample named `name` with no labels (a plain gauge).
    pub(crate) fn unlabelled(&self, name: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels.is_empty())
            .map(|s| s.value)
    }

    /// Sum of the samples of every counter family whose labels include all of `labels`.
    pub(crate) fn counter_sum(&self, labels: &[(&str, &str)]) -> f64 {
        let counters = self.counters();
        self.samples
            .iter()
            .filter(|s| {
                counters
                    .iter()
                    .any(|family| s.name == format!("{family}_total") || s.name == *family)
            })
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

/// Parses the text format; a line that is neither a comment nor a sample is an error naming it.
pub(crate) fn parse(text: &str) -> Result<Exposition, String> {
    let mut exposition = Exposition::default();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            if words.len() >= 3 && words[0] == "TYPE" {
                exposition
                    .types
                    .insert(words[1].to_string(), words[2].to_string());
            }
            continue;
        }
        let sample = parse_sample(line)
            .ok_or_else(|| format!("line {}: not a Prometheus sample: {line}", number + 1))?;
        exposition.samples.push(sample);
    }
    Ok(exposition)
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    if name.is_empty() {
        return None;
    }
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        chars.next()?; // '='
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.insert(key.trim().to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP fft_http_requests HTTP requests answered.
# TYPE fft_http_requests counter
fft_http_requests_total{method="POST",route="/fft",status="200"} 7
fft_http_requests_total{method="GET",route="/metrics",status="200"} 2
fft_http_requests_total{method="POST",route="/fft",status="400"} 1
# TYPE fft_http_request_duration_seconds histogram
fft_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/fft"} 8
fft_jobs_running 0
# EOF
"#;

    #[test]
    fn sums_counter_samples_by_label() {
        let parsed = parse(SCRAPE).unwrap();
        assert_eq!(parsed.counters(), vec!["fft_http_requests"]);
        assert_eq!(parsed.counter_sum(&[("route", "/fft")]), 8.0);
        assert_eq!(
            parsed.counter_sum(&[("route", "/fft"), ("status", "200"), ("method", "POST")]),
            7.0
        );
        // Histogram buckets carry the route label too but are not counters.
        assert_eq!(parsed.counter_sum(&[("route", "/nothing")]), 0.0);
        assert_eq!(parsed.samples.len(), 5);
        assert_eq!(parsed.samples[3].value, 8.0);
    }

    #[test]
    fn escaped_label_values() {
        let parsed = parse("m{a=\"x\\\"y\",b=\"\"} 1.5e3\n").unwrap();
        assert_eq!(parsed.samples[0].labels["a"], "x\"y");
        assert_eq!(parsed.samples[0].labels["b"], "");
        assert_eq!(parsed.samples[0].value, 1500.0);
    }

    #[test]
    fn html_is_not_prometheus_text() {
        let err = parse("<html><body>Not Found</body></html>").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }
}
