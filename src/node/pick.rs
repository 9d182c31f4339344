//! `NodeHandle::pick`: choose one instance of a service for a request
//! (strategies and eligibility rules: [`crate::core::Strategy`] and the
//! `core::pick` module docs; state kept across picks: [`Picked`]).

use crate::core::{InstanceId, Namespace, PickOptions, ServiceName, ServiceQuery};

use super::error::NodeError;
use super::handle::NodeHandle;
use super::picker::Picked;

impl NodeHandle {
    /// Choose one instance of `service` by `options`: passing instances
    /// first (warning ones only if none passes, critical and weight-0 ones
    /// never), carrying every tag asked for, in the preferred zone if any
    /// is (by default this node's own `zone` tag); then by the strategy.
    /// `None` when no instance is eligible. Served from local state.
    ///
    /// The [`Picked`] counts as a request in flight to its instance until
    /// it is dropped, which is what
    /// [`Strategy::LeastOutstanding`](crate::core::Strategy::LeastOutstanding)
    /// balances: keep it alive for the duration of the request.
    ///
    /// ```no_run
    /// # async fn demo(node: starling::node::NodeHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// use starling::core::{Namespace, PickOptions, ServiceName, Strategy};
    ///
    /// let (ns, api) = (Namespace::new("prod")?, ServiceName::new("api")?);
    /// let by_user = PickOptions::new(Strategy::Hash { key: "user-42".into() });
    /// if let Some(picked) = node.pick(&ns, &api, by_user).await? {
    ///     println!("sending to {}", picked.addr());
    ///     // ... the request; `picked` dropped when it ends.
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn pick(
        &self,
        namespace: &Namespace,
        service: &ServiceName,
        options: PickOptions,
    ) -> Result<Option<Picked>, NodeError> {
        let (ns, s) = (namespace.clone(), service.clone());
        let (instances, zone) = self
            .read(move |e, _| {
                let zone = e.local_member().info.tags.get("zone").cloned();
                (e.services(&ns, &s, &ServiceQuery::default()), zone)
            })
            .await?;
        Ok(self
            .picker
            .pick(namespace, service, &instances, &options, zone.as_deref()))
    }

    /// Requests to an instance this node's picks count as in flight (a
    /// [`Picked`] not yet dropped).
    pub fn picks_in_flight(
        &self,
        namespace: &Namespace,
        service: &ServiceName,
        instance: &InstanceId,
    ) -> u32 {
        self.picker.outstanding(namespace, service, instance)
    }
}
