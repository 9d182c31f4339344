//! Counters of health checks and service files, for `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::core::HealthStatus;

const STATUSES: [HealthStatus; 3] = [
    HealthStatus::Passing,
    HealthStatus::Warning,
    HealthStatus::Critical,
];
const KINDS: [&str; 3] = ["http", "tcp", "command"];

/// Labels of `starling_check_runs_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RunLabels {
    /// `http`, `tcp` or `command`.
    pub kind: &'static str,
    /// What the run found: `passing`, `warning` or `critical`.
    pub result: &'static str,
}

/// Labels with a health status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabels {
    /// `passing`, `warning` or `critical` (`pending` for checks not run yet).
    pub status: &'static str,
}

/// Labels of `starling_service_file_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FileErrorLabels {
    /// `read` (file or directory), `parse` (TOML or a field), `duplicate`
    /// (two files declare one instance), `register` (the node refused it).
    pub reason: &'static str,
}

/// Labels of `starling_service_file_changes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FileChangeLabels {
    /// `register` (new or changed) or `deregister`.
    pub action: &'static str,
}

/// Check and service-file counters, shared by the check tasks, the
/// service-directory task and the metrics scrape.
#[derive(Debug, Default)]
pub(crate) struct CheckMetrics {
    /// Check runs, by kind and result.
    pub runs: Family<RunLabels, Counter>,
    /// Check status changes (after thresholds), by new status.
    pub status_changes: Family<StatusLabels, Counter>,
    /// Instances deregistered because a check stayed critical.
    pub deregistrations: Counter,
    /// Invalid or refused service files, by reason.
    pub file_errors: Family<FileErrorLabels, Counter>,
    /// Registrations and deregistrations made from service files.
    pub file_changes: Family<FileChangeLabels, Counter>,
}

impl CheckMetrics {
    pub(crate) fn new() -> CheckMetrics {
        let m = CheckMetrics::default();
        // Every series from the start, zeros included.
        for kind in KINDS {
            for s in STATUSES {
                let _ = m.runs.get_or_create(&RunLabels {
                    kind,
                    result: s.as_str(),
                });
            }
        }
        for s in STATUSES {
            let _ = m
                .status_changes
                .get_or_create(&StatusLabels { status: s.as_str() });
        }
        for reason in ["read", "parse", "duplicate", "register"] {
            let _ = m.file_errors.get_or_create(&FileErrorLabels { reason });
        }
        for action in ["register", "deregister"] {
            let _ = m.file_changes.get_or_create(&FileChangeLabels { action });
        }
        m
    }

    /// Count one run.
    pub(crate) fn run(&self, kind: &'static str, result: HealthStatus) {
        self.runs
            .get_or_create(&RunLabels {
                kind,
                result: result.as_str(),
            })
            .inc();
    }

    /// Count one status change.
    pub(crate) fn status_change(&self, status: HealthStatus) {
        self.status_changes
            .get_or_create(&StatusLabels {
                status: status.as_str(),
            })
            .inc();
    }

    /// Count one service file error.
    pub(crate) fn file_error(&self, reason: &'static str) {
        self.file_errors.get_or_create(&FileErrorLabels { reason }).inc();
    }

    /// Count one registration change made from a file.
    pub(crate) fn file_change(&self, action: &'static str) {
        self.file_changes
            .get_or_create(&FileChangeLabels { action })
            .inc();
    }

    /// Register the families in a scrape's registry, with a gauge of the
    /// checks armed on this node by status (`counts`: passing, warning,
    /// critical, pending).
    pub(crate) fn register(&self, registry: &mut Registry, counts: [u64; 4]) {
        registry.register(
            "check_runs",
            "Health check runs on this node, by kind (http, tcp, command) and result",
            self.runs.clone(),
        );
        registry.register(
            "check_status_changes",
            "Health check status changes on this node (after the failure and success \
             thresholds), by new status",
            self.status_changes.clone(),
        );
        registry.register(
            "check_deregistrations",
            "Instances this node deregistered because a check stayed critical for its \
             deregister_critical_after_ms",
            self.deregistrations.clone(),
        );
        registry.register(
            "service_file_errors",
            "Service files (services_dir) not applied, by reason (read, parse, duplicate, \
             register); the running registration stays as it was",
            self.file_errors.clone(),
        );
        registry.register(
            "service_file_changes",
            "Registrations (new or changed) and deregistrations made from service files",
            self.file_changes.clone(),
        );
        let gauge: Family<StatusLabels, Gauge> = Family::default();
        for (status, n) in ["passing", "warning", "critical", "pending"]
            .into_iter()
            .zip(counts)
        {
            gauge
                .get_or_create(&StatusLabels { status })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        registry.register(
            "checks",
            "Health checks armed on this node, by status (pending: not run yet)",
            gauge,
        );
    }
}
