//! DNS counters, kept in the node's metrics (so `GET /metrics` shows them)
//! and counted by the DNS handler.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// How a DNS query ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// NOERROR: records, or none of the type asked for (NODATA).
    Answered,
    /// NXDOMAIN: no such name under the domain.
    NxDomain,
    /// REFUSED: a name outside the domain, or a class other than IN.
    Refused,
    /// SERVFAIL: the node could not answer (stopping, or too many
    /// queries in flight).
    ServFail,
    /// FORMERR, NOTIMP or BADVERS: a query this server does not take
    /// (not one question, not a standard query, an EDNS version above 0).
    Malformed,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Answered,
        Outcome::NxDomain,
        Outcome::Refused,
        Outcome::ServFail,
        Outcome::Malformed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::NxDomain => "nxdomain",
            Outcome::Refused => "refused",
            Outcome::ServFail => "servfail",
            Outcome::Malformed => "malformed",
        }
    }
}

/// Labels of `starling_dns_queries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    /// An [`Outcome`]'s name.
    result: &'static str,
}

/// The DNS server's counters.
#[derive(Debug, Default)]
pub(crate) struct DnsMetrics {
    /// Queries answered, by outcome.
    pub queries: Family<OutcomeLabels, Counter>,
    /// UDP answers cut short with the TC bit set (the client should retry
    /// over TCP).
    pub truncated: Counter,
}

impl DnsMetrics {
    /// Counters with every outcome at 0 (a dashboard sees each series
    /// before its first query).
    pub(crate) fn new() -> Self {
        let m = DnsMetrics::default();
        for o in Outcome::ALL {
            let _ = m.count(o);
        }
        m
    }

    /// Count one query.
    pub(crate) fn counted(&self, outcome: Outcome) {
        self.queries
            .get_or_create(&OutcomeLabels {
                result: outcome.as_str(),
            })
            .inc();
    }

    /// Queries counted with `outcome`.
    pub(crate) fn count(&self, outcome: Outcome) -> u64 {
        self.queries
            .get_or_create(&OutcomeLabels {
                result: outcome.as_str(),
            })
            .get()
    }
}
