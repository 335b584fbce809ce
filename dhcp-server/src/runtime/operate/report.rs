//! How the engine's counters and lease states and the failover machine's status become
//! the control protocol's types, so that `control` (and the `ctl` printer) knows nothing
//! of the engine.

use dhcp_proto::engine;
use dhcp_proto::failover::machine;

use std::sync::atomic::Ordering;

use crate::control::{FailoverStatus, LeaseState, ShardStats, SinkStatus, Stats};

/// The JSON key of each engine message-type counter, by the engine's index (0: other).
const MESSAGE_KEYS: [&str; 14] = [
    "other",
    "discover",
    "offer",
    "request",
    "decline",
    "ack",
    "nak",
    "release",
    "inform",
    "forcerenew",
    "leasequery",
    "leaseunassigned",
    "leaseunknown",
    "leaseactive",
];

/// Adds one shard's engine counters to `stats`: to the totals, and as that shard's own
/// row. Called once per shard, so every key is present even at zero.
pub fn add_shard(stats: &mut Stats, shard: u16, counters: &engine::Stats) {
    let mut row = ShardStats {
        shard,
        ..ShardStats::default()
    };
    for (i, key) in MESSAGE_KEYS.iter().enumerate() {
        *stats.received.entry((*key).to_owned()).or_default() += counters.rx[i];
        *stats.sent.entry((*key).to_owned()).or_default() += counters.tx[i];
        row.received += counters.rx[i];
        row.sent += counters.tx[i];
    }
    for reason in engine::Drop::ALL {
        let n = counters.dropped(reason);
        *stats.drops.entry(reason.name().to_owned()).or_default() += n;
        row.dropped += n;
    }
    stats.shards.push(row);
}

/// The engine's state as operators see it; `None` for `Foreign` (another shard's).
pub fn lease_state(s: engine::LeaseState) -> Option<LeaseState> {
    Some(match s {
        engine::LeaseState::Free => LeaseState::Free,
        engine::LeaseState::Offered => LeaseState::Offered,
        engine::LeaseState::Active => LeaseState::Active,
        engine::LeaseState::Released => LeaseState::Released,
        engine::LeaseState::Expired => LeaseState::Expired,
        engine::LeaseState::Declined => LeaseState::Declined,
        engine::LeaseState::Partner => LeaseState::Partner,
        engine::LeaseState::Foreign => return None,
    })
}

/// The failover link's latest snapshot as `status` shows it.
pub fn failover_status(s: &machine::Status) -> FailoverStatus {
    FailoverStatus {
        name: s.name.clone(),
        role: s.role.name().to_owned(),
        local_state: s.me.name().to_owned(),
        local_stos: s.me_stos,
        peer_state: s.partner.name().to_owned(),
        peer_stos: s.partner_stos,
        service: s.service.name().to_owned(),
        connected: s.connected,
        mclt: s.mclt,
        queued_updates: s.queued as u64,
        unacked_updates: s.unacked as u64,
    }
}

/// A lease history sink as `status` shows it.
pub fn sink_status(s: &crate::history::Status) -> SinkStatus {
    let last = s.last_error();
    SinkStatus {
        sink: s.kind.to_owned(),
        connected: s.connected.load(Ordering::Relaxed),
        delivered: s.delivered.load(Ordering::Relaxed),
        lag_records: s.lag_records(),
        lag_seconds: s.behind_seconds.load(Ordering::Relaxed),
        lost: s.lost.load(Ordering::Relaxed),
        errors: s.errors.load(Ordering::Relaxed),
        last_error_at: last.as_ref().map(|(at, _)| *at),
        last_error: last.map(|(_, e)| e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_add_shard_sums_and_keeps_rows() {
        let mut a = engine::Stats::default();
        a.rx[1] = 5; // discover
        a.tx[2] = 4; // offer
        a.drops[0] = 1;
        let mut b = engine::Stats::default();
        b.rx[1] = 2;
        b.rx[0] = 1;
        let mut s = Stats::default();
        add_shard(&mut s, 0, &a);
        add_shard(&mut s, 1, &b);
        assert_eq!(s.received["discover"], 7);
        assert_eq!(s.received["other"], 1);
        assert_eq!(s.sent["offer"], 4);
        assert_eq!(s.sent["ack"], 0);
        assert_eq!(s.drops["malformed"], 1);
        assert_eq!(s.drops.len(), engine::Drop::ALL.len());
        assert_eq!(s.shards[0].received, 5);
        assert_eq!(s.shards[0].dropped, 1);
        assert_eq!(s.shards[1].received, 3);
    }

    fn machine_status() -> dhcp_proto::failover::machine::Status {
        dhcp_proto::failover::machine::Status {
            name: "pair".into(),
            role: dhcp_proto::failover::Role::Primary,
            me: dhcp_proto::failover::ServerState::PartnerDown,
            me_stos: 1_700_000_100,
            partner: dhcp_proto::failover::ServerState::CommunicationsInterrupted,
            partner_stos: 1_700_000_000,
            service: dhcp_proto::failover::Service::PartnerDown,
            connected: false,
            mclt: 3600,
            queued: 7,
            unacked: 3,
        }
    }

    #[test]
    fn the_machine_s_status_reads_in_its_states_names() {
        let f = failover_status(&machine_status());
        assert_eq!(
            (
                f.role.as_str(),
                f.local_state.as_str(),
                f.peer_state.as_str(),
                f.service.as_str()
            ),
            (
                "primary",
                "partner-down",
                "communications-interrupted",
                "partner-down"
            )
        );
        assert_eq!((f.queued_updates, f.unacked_updates, f.mclt), (7, 3, 3600));
    }
}
