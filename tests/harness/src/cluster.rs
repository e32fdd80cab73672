//! Several `nats-server` processes joined in one JetStream cluster.

use crate::HarnessError;
use crate::server::{ClusterMembership, NatsServer};
use crate::service::free_port;

/// A JetStream cluster of local `nats-server` processes, each with its own store and log,
/// routed to each other on ports picked at start; every member is killed on drop.
///
/// Members can be killed and restarted one by one ([`member_mut`](Self::member_mut)); a
/// restarted member keeps its name, ports and store, and rejoins.
///
/// ```no_run
/// let mut cluster = govbus_harness::NatsCluster::start(3)?;
/// let urls = cluster.client_urls(); // "nats://127.0.0.1:…,nats://127.0.0.1:…,…"
/// cluster.member_mut(1).kill()?;
/// cluster.member_mut(1).restart()?;
/// # Ok::<(), govbus_harness::HarnessError>(())
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    members: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` servers named `n1`, `n2`, … and waits until each is healthy (JetStream
    /// has a meta leader). A size of 1 is one standalone server, not clustered, as
    /// [`NatsServer::start`] starts it.
    pub fn start(size: usize) -> Result<Self, HarnessError> {
        if size <= 1 {
            return Ok(Self {
                members: vec![NatsServer::start()?],
            });
        }
        let route_ports = (0..size)
            .map(|_| free_port())
            .collect::<Result<Vec<_>, _>>()?;
        let mut members = Vec::with_capacity(size);
        for (index, &route_port) in route_ports.iter().enumerate() {
            let membership = ClusterMembership {
                cluster_name: "govbus-test".to_owned(),
                server_name: format!("n{}", index + 1),
                route_port,
                peer_route_ports: route_ports
                    .iter()
                    .copied()
                    .filter(|&port| port != route_port)
                    .collect(),
            };
            members.push(NatsServer::prepare("", Some(membership))?);
        }
        // JetStream becomes healthy only once a quorum runs, so launch all before waiting.
        for member in &mut members {
            member.launch()?;
        }
        for member in &mut members {
            member.await_ready()?;
        }
        Ok(Self { members })
    }

    /// Every member's client URL, comma-separated (what `GOVBUS_NATS_URL` takes).
    pub fn client_urls(&self) -> String {
        self.members
            .iter()
            .map(NatsServer::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The members, in name order.
    pub fn members(&self) -> &[NatsServer] {
        &self.members
    }

    /// The member at `index` (0 for `n1`).
    ///
    /// # Panics
    /// If there is no such member.
    pub fn member_mut(&mut self, index: usize) -> &mut NatsServer {
        &mut self.members[index]
    }

    /// The member named `name`, if any.
    pub fn member_named(&mut self, name: &str) -> Option<&mut NatsServer> {
        self.members
            .iter_mut()
            .find(|member| member.server_name() == Some(name))
    }

    /// Every member's log, one after another.
    pub fn log(&self) -> String {
        self.members
            .iter()
            .map(|member| {
                format!(
                    "=== {} ===\n{}",
                    member.server_name().unwrap_or("?"),
                    member.log()
                )
            })
            .collect()
    }
}
