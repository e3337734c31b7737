//! The process's own metrics, under the names every Prometheus client library uses
//! (`process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_cpu_seconds_total`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`), read from `/proc/self`
//! at each scrape. Linux only: elsewhere the collector shows nothing. What cannot be read is left
//! out, never shown as zero.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

#[derive(Debug)]
pub(super) struct ProcessCollector {
    /// Clock ticks per second and bytes per page, as `/proc` counts them.
    ticks: f64,
    page: f64,
}

impl ProcessCollector {
    pub(super) fn new() -> Self {
        #[cfg(target_os = "linux")]
        // SAFETY: sysconf reads a constant of the system and has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        #[cfg(not(target_os = "linux"))]
        let (ticks, page) = (0, 0);
        Self {
            ticks: ticks as f64,
            page: page as f64,
        }
    }
}

/// What one scrape read.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

impl ProcessCollector {
    #[cfg(target_os = "linux")]
    fn sample(&self) -> Sample {
        let mut sample = Sample::default();
        if self.ticks > 0.0
            && self.page > 0.0
            && let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some(fields) = stat_fields(&stat)
        {
            sample.cpu_seconds = Some((fields.utime + fields.stime) as f64 / self.ticks);
            sample.resident_bytes = Some(fields.rss_pages as f64 * self.page);
            sample.virtual_bytes = Some(fields.vsize as f64);
            sample.start_time_seconds = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|text| boot_time(&text))
                .map(|boot| boot as f64 + fields.start_ticks as f64 / self.ticks);
        }
        sample.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as f64);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit through a valid pointer to one.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            sample.max_fds = Some(limit.rlim_cur as f64);
        }
        sample
    }

    #[cfg(not(target_os = "linux"))]
    fn sample(&self) -> Sample {
        Sample::default()
    }
}

/// The fields of `/proc/self/stat` used here (see proc(5)).
#[derive(Debug, PartialEq)]
struct StatFields {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Parses `/proc/self/stat`. The command name (field 2) is in parentheses and may hold spaces
/// and parentheses itself, so the fields are counted from its last `)`.
fn stat_fields(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state): field N is at index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The boot time, in seconds since the epoch, from `/proc/stat`'s `btime` line.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = self.sample();
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                sample.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                sample.virtual_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                sample.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Open file descriptors (sockets included)",
                sample.open_fds,
            ),
            (
                "process_max_fds",
                "The most file descriptors the process may open (its soft limit)",
                sample.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(value).encode(metric)?;
            }
        }
        if let Some(seconds) = sample.cpu_seconds {
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(seconds).encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 4096 17000 0 0 0 17 3 0 0 0 0 0";
        assert_eq!(
            stat_fields(stat),
            Some(StatFields {
                utime: 250,
                stime: 50,
                start_ticks: 123456,
                vsize: 987654321,
                rss_pages: 2048,
            })
        );
        assert_eq!(stat_fields("garbage"), None);
        assert_eq!(stat_fields("1 (x) S 1 2"), None);
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_can_be_read() {
        let sample = ProcessCollector::new().sample();
        assert!(sample.resident_bytes.is_some_and(|b| b > 0.0));
        assert!(sample.cpu_seconds.is_some());
        assert!(sample.open_fds.is_some_and(|n| n >= 1.0));
        assert!(sample.start_time_seconds.is_some_and(|t| t > 1.0e9));
    }
}
