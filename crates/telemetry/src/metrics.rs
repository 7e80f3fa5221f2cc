//! Metrics exposition, the one way every role answers `/metrics`.
//!
//! A role's counters are atomics it already keeps; at scrape time it hands
//! [`render`] one or more collectors (usually [`from_fn`] closures holding
//! `Arc`s of its state) that describe those values through an
//! [`Exposition`]. The `prometheus-client` crate does the encoding (names,
//! the `_total` suffix of counters, label escaping, histogram buckets) into
//! OpenMetrics text ending in `# EOF`, served as [`CONTENT_TYPE`]. The
//! process's own metrics ([`crate::process::ProcessCollector`]) are added to
//! every exposition.
//!
//! Counter names are given without `_total`: the encoder appends it, so
//! `counters("bulwark_lb_retries", …)` exposes `bulwark_lb_retries_total`.
use crate::histogram::{LatencyHistogram, LATENCY_BUCKETS_US};
use prometheus_client::encoding::{EncodeGaugeValue, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;

/// The content type of [`render`]'s text: OpenMetrics 1.0, which
/// Prometheus negotiates and parses natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `code` label of a status class, indexed by the status's first
/// digit (`other` for anything outside 1xx..5xx).
pub const STATUS_CLASSES: [&str; 6] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// The OpenMetrics text of `collectors` followed by the process metrics
/// and `# EOF`.
pub fn render(collectors: Vec<Box<dyn Collector>>) -> String {
    let mut registry = Registry::default();
    for c in collectors {
        registry.register_collector(c);
    }
    registry.register_collector(Box::new(crate::process::ProcessCollector));
    let mut out = String::with_capacity(16 * 1024);
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        // Only a collector can fail (writing to a String cannot): keep what
        // was written so far rather than answer nothing.
        tracing::warn!("a metrics collector failed; the exposition is partial");
    }
    out
}

/// A collector that calls `describe` at every scrape.
pub fn from_fn<F>(describe: F) -> Box<dyn Collector>
where
    F: Fn(&mut Exposition<'_>) -> fmt::Result + Send + Sync + 'static,
{
    Box::new(FnCollector(describe))
}

struct FnCollector<F>(F);

impl<F> fmt::Debug for FnCollector<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnCollector")
    }
}

impl<F> Collector for FnCollector<F>
where
    F: Fn(&mut Exposition<'_>) -> fmt::Result + Send + Sync + 'static,
{
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        (self.0)(&mut Exposition::new(encoder))
    }
}

/// Writes metric families, each a name, a help text and its samples,
/// into one scrape.
pub struct Exposition<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl<'a> Exposition<'a> {
    pub fn new(encoder: DescriptorEncoder<'a>) -> Self {
        Exposition { encoder }
    }

    /// A counter without labels; `name` without `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        debug_assert!(!name.ends_with("_total"), "{name}: the encoder appends _total");
        let m = self.encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(value).encode(m)
    }

    /// A counter of a fractional quantity (seconds) without labels.
    pub fn counter_f64(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        debug_assert!(!name.ends_with("_total"), "{name}: the encoder appends _total");
        let m = self.encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(value).encode(m)
    }

    /// A counter per label set; `name` without `_total`.
    pub fn counters<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, u64)>,
    ) -> fmt::Result {
        debug_assert!(!name.ends_with("_total"), "{name}: the encoder appends _total");
        self.family(name, help, MetricType::Counter, samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v))))
    }

    /// A gauge without labels.
    pub fn gauge<V: EncodeGaugeValue>(&mut self, name: &str, help: &str, value: V) -> fmt::Result {
        let m = self.encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(value).encode(m)
    }

    /// A gauge per label set.
    pub fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result {
        self.family(name, help, MetricType::Gauge, samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v))))
    }

    /// A latency histogram (in seconds) per label set.
    pub fn histograms<'h, L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, &'h LatencyHistogram)>,
    ) -> fmt::Result {
        self.family(name, help, MetricType::Histogram, samples)
    }

    fn family<L: EncodeLabelSet, M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (L, M)>,
    ) -> fmt::Result {
        let mut m = self.encoder.encode_descriptor(name, help, None, kind)?;
        for (labels, metric) in samples {
            metric.encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl EncodeMetric for &LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let counts = self.snapshot();
        let bounds = LATENCY_BUCKETS_US.iter().map(|&us| us as f64 / 1e6).chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(counts).collect();
        let sum = self.sum_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, counts.iter().sum(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(f: impl Fn(&mut Exposition<'_>) -> fmt::Result + Send + Sync + 'static) -> String {
        render(vec![from_fn(f)])
    }

    #[test]
    fn counters_get_total_once_and_labels() {
        let out = scrape(|m| {
            m.counter("x_hits", "Hits.", 3)?;
            m.counters("x_requests", "Requests.", [([("route", "/a\"b")], 5)])
        });
        assert!(out.contains("# TYPE x_hits counter\n"), "{out}");
        assert!(out.contains("\nx_hits_total 3\n"), "{out}");
        assert!(out.contains("\nx_requests_total{route=\"/a\\\"b\"} 5\n"), "{out}");
        assert!(!out.contains("_total_total"), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
    }

    #[test]
    fn integer_gauges_stay_integers() {
        let out = scrape(|m| {
            m.gauge("x_up", "Up.", 1i64)?;
            m.gauges("x_ratio", "Ratio.", [([("a", "b")], 0.5f64)])
        });
        assert!(out.contains("\nx_up 1\n"), "{out}");
        assert!(out.contains("\nx_ratio{a=\"b\"} 0.5\n"), "{out}");
    }

    #[test]
    fn histogram_buckets_are_cumulative_seconds() {
        let h = std::sync::Arc::new(LatencyHistogram::default());
        h.observe(std::time::Duration::from_millis(2));
        h.observe(std::time::Duration::from_secs(60));
        let out = scrape(move |m| m.histograms("x_seconds", "Latency.", [([("a", "b")], &*h)]));
        assert!(out.contains("# TYPE x_seconds histogram\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.001\",a=\"b\"} 0\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.0025\",a=\"b\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\",a=\"b\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_count{a=\"b\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_sum{a=\"b\"} 60.002\n"), "{out}");
    }

    #[test]
    fn every_exposition_has_the_process_metrics() {
        let out = render(Vec::new());
        assert!(out.contains("\nprocess_cpu_seconds_total "), "{out}");
        assert!(out.contains("# TYPE process_cpu_seconds counter\n"), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
    }

    #[test]
    fn prometheus_text_parsers_read_it() {
        let h = std::sync::Arc::new(LatencyHistogram::default());
        h.observe(std::time::Duration::from_millis(2));
        let out = scrape(move |m| {
            m.counters("x_requests", "Requests.", [([("code", "2xx")], 7)])?;
            m.histograms("x_seconds", "Latency.", [([("a", "b")], &*h)])
        });
        let scrape = prometheus_parse::Scrape::parse(out.lines().map(|l| Ok(l.to_string()))).unwrap();
        let requests = scrape.samples.iter().find(|s| s.metric == "x_requests_total").expect("counter sample");
        assert_eq!(requests.labels.get("code"), Some("2xx"));
        assert!(matches!(requests.value, prometheus_parse::Value::Untyped(7.0)), "{:?}", requests.value);
        let latency = scrape.samples.iter().find(|s| s.metric == "x_seconds").expect("histogram");
        let prometheus_parse::Value::Histogram(buckets) = &latency.value else { panic!("{:?}", latency.value) };
        assert_eq!(buckets.iter().find(|b| b.less_than == 0.0025).map(|b| b.count), Some(1.0));
    }
}
