//! The writer rules in force ([`crate::core::acl`]): kept in step with the
//! state of the reserved namespace, and versions outside them purged.

use super::{CommandError, Engine};
use crate::core::acl::{acl_namespace, WriterRule, ACL_NAMESPACE};
use crate::core::ids::{Key, Namespace, NodeId, StateKey};
use crate::core::state::Payload;

impl Engine {
    /// Rebuild every rule from the state and the configured admins (at
    /// start and when the admins change), purging what falls outside.
    pub(super) fn rebuild_acl(&mut self) {
        self.acl.admins = self.cfg.admins();
        let rule_keys = self.keys_in(&acl_namespace());
        // Rule versions by origins no longer admins go first.
        for key in &rule_keys {
            let acl = &self.acl;
            self.counters.acl_purged += self.state.purge(key, |d| acl.permits(key, d)) as u64;
        }
        let mut governed: Vec<Namespace> = self.acl.rules.keys().cloned().collect();
        governed.extend(rule_keys.iter().filter_map(governed_by));
        governed.sort();
        governed.dedup();
        for ns in governed {
            self.apply_rule(ns);
        }
    }

    /// Bring the rules in step with rule keys whose live versions changed
    /// in this input (called once per input, before its changes are
    /// flushed).
    pub(super) fn refresh_acl(&mut self) {
        if self.acl.admins.is_empty() {
            // No rule version is ever taken without admins (and a rebuild
            // purged the rules of former ones).
            return;
        }
        let acl_ns = acl_namespace();
        let changed: Vec<Namespace> = self
            .state
            .live_changed()
            .filter(|k| k.namespace() == &acl_ns)
            .filter_map(governed_by)
            .collect();
        for ns in changed {
            self.apply_rule(ns);
        }
    }

    /// Make the rule of `ns` what the state holds; if it changed, purge
    /// the versions of `ns` it refuses.
    fn apply_rule(&mut self, ns: Namespace) {
        let rule = self.rule_in_state(&ns);
        if self.acl.rules.get(&ns) == rule.as_ref() {
            return;
        }
        match rule {
            Some(rule) => {
                tracing::info!(namespace = %ns, writers = rule.writers.len(), "writer rule in force");
                self.acl.rules.insert(ns.clone(), rule);
            }
            None => {
                tracing::info!(namespace = %ns, "writer rule removed: namespace open to every member");
                self.acl.rules.remove(&ns);
            }
        }
        let mut purged = 0;
        for key in self.keys_in(&ns) {
            let acl = &self.acl;
            purged += self.state.purge(&key, |d| acl.permits(&key, d));
        }
        if purged > 0 {
            tracing::warn!(namespace = %ns, purged, "versions outside the new writer rule removed");
            self.counters.acl_purged += purged as u64;
        }
    }

    /// Every key of namespace `ns` held here.
    fn keys_in(&self, ns: &Namespace) -> Vec<StateKey> {
        self.state
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.namespace() == ns)
            .cloned()
            .collect()
    }

    /// The rule of `ns` the state holds: the meet of its live values (a
    /// value that does not parse refuses every writer); `None` when it
    /// has none (never written, or deleted).
    fn rule_in_state(&self, ns: &Namespace) -> Option<WriterRule> {
        let ks = self.state.get(&rule_key(ns))?;
        ks.live
            .iter()
            .filter_map(|v| match &v.payload {
                Payload::Value(bytes) => Some(
                    std::str::from_utf8(bytes)
                        .map_err(|e| e.to_string())
                        .and_then(WriterRule::parse)
                        .unwrap_or_else(|e| {
                            tracing::warn!(namespace = %ns, error = %e, "writer rule does not parse: nobody may write");
                            WriterRule::default()
                        }),
                ),
                _ => None,
            })
            .reduce(|a, b| a.meet(&b))
    }

    /// Refuse a local write to `ns` this node may not make: the reserved
    /// namespace (written through the rule commands only), or a namespace
    /// whose rule does not list this node.
    pub(super) fn check_may_write(&self, ns: &Namespace) -> Result<(), CommandError> {
        if ns.as_str() == ACL_NAMESPACE {
            return Err(CommandError::Invalid(format!(
                "namespace {ACL_NAMESPACE} is reserved for writer rules: use `starling acl` or /v1/acl"
            )));
        }
        if !self.acl.may_write(ns, self.me, self.state.next_seq(&self.me)) {
            return Err(CommandError::NotPermitted(format!(
                "this node is not a writer of namespace {ns} (its writer rule does not list it)"
            )));
        }
        Ok(())
    }

    /// The rule an admin writes to make `writers` the writers of `ns` (see
    /// [`WriterRule::replacing`]), or the reason it may not.
    pub(super) fn rule_for(&self, ns: &Namespace, writers: &[NodeId]) -> Result<String, CommandError> {
        self.check_admin(ns)?;
        let listed = writers.iter().copied().collect();
        let origins: Vec<NodeId> = self
            .state
            .knowledge()
            .iter()
            .map(|(n, _)| *n)
            .chain(self.signed_high.keys().copied())
            .collect();
        let mark = |n: &NodeId| {
            self.state
                .knowledge()
                .max_seq(n)
                .max(self.signed_up_to(n).unwrap_or(0))
        };
        let rule = WriterRule::replacing(self.acl.rules.get(ns), &listed, origins, mark);
        Ok(rule.to_text())
    }

    /// Refuse a rule change unless this node is an admin and `ns` is not
    /// the reserved namespace itself.
    pub(super) fn check_admin(&self, ns: &Namespace) -> Result<(), CommandError> {
        if ns.as_str() == ACL_NAMESPACE {
            return Err(CommandError::Invalid(format!(
                "namespace {ACL_NAMESPACE} is written by admins only; it has no writer rule"
            )));
        }
        if !self.acl.admins.contains(&self.me) {
            return Err(CommandError::NotPermitted(
                "only a node named in protocol.acl_admins may change writer rules".into(),
            ));
        }
        Ok(())
    }

    /// The writer rules in force, by namespace.
    pub fn writer_rules(&self) -> &std::collections::BTreeMap<Namespace, WriterRule> {
        &self.acl.rules
    }

    /// The nodes that may change the writer rules.
    pub fn acl_admins(&self) -> &std::collections::BTreeSet<NodeId> {
        &self.acl.admins
    }
}

/// The key of the rule of `ns`.
pub(super) fn rule_key(ns: &Namespace) -> StateKey {
    StateKey::Kv {
        namespace: acl_namespace(),
        key: Key::new(ns.as_str()).expect("a namespace name is a valid key"),
    }
}

/// The namespace a rule key governs (`None` for a key of the reserved
/// namespace that names no valid namespace).
fn governed_by(key: &StateKey) -> Option<Namespace> {
    match key {
        StateKey::Kv { key, .. } => Namespace::new(key.as_str()).ok(),
        _ => None,
    }
}
