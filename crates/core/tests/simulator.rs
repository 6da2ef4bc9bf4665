//! The simulator end to end: many seeds pass, runs replay bit for bit, and deliberately
//! broken protocol variants are caught within a stated number of seeds.

use lockstep_core::config::Bugs;
use lockstep_core::sim::{self, SimConfig};

/// Runs seeds `0..limit` on two threads until one fails; returns the failing seed found first.
fn hunt(cfg: &SimConfig, limit: u64) -> Option<(u64, &'static str)> {
    sim::hunt(limit, 2, |seed| sim::run(seed, cfg))
}

/// A harsher profile: faults every ~30 ms, one entry per message, short runs.
fn harsh() -> SimConfig {
    let mut cfg = SimConfig {
        nemesis_interval_ms: 30,
        ops: 100,
        ..SimConfig::default()
    };
    cfg.raft.max_entries_per_msg = 1;
    cfg
}

#[test]
fn correct_protocol_passes_many_seeds_with_every_fault_kind() {
    assert_eq!(hunt(&SimConfig::default(), 60), None);
    assert_eq!(hunt(&harsh(), 200), None);
    assert_eq!(hunt(&SimConfig::figure8(), 100), None);
}

#[test]
fn catches_committing_old_term_entries_by_counting_replicas_figure_8_within_100_seeds() {
    let cfg = SimConfig::figure8().with_bugs(Bugs {
        commit_old_term_by_count: true,
        ..Bugs::default()
    });
    assert!(hunt(&cfg, 100).is_some());
}

#[test]
fn a_seed_replays_bit_for_bit() {
    let cfg = SimConfig {
        ops: 300,
        ..SimConfig::default()
    };
    let a = sim::run(11, &cfg).unwrap();
    let b = sim::run(11, &cfg).unwrap();
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert!(
        a.ops_ok > 0 && a.elections > 0 && a.crashes > 0,
        "the run exercised faults: {a:?}"
    );
}

#[test]
fn a_failure_names_its_seed_and_replay_command() {
    let cfg = SimConfig::default().with_bugs(Bugs {
        ack_before_durable: true,
        ..Bugs::default()
    });
    let f = sim::run(0, &cfg).unwrap_err();
    let text = f.to_string();
    assert!(
        text.contains("seed 0") && text.contains("cargo xtask sim --seed 0"),
        "{text}"
    );
}

#[test]
fn catches_acknowledging_entries_before_they_are_durable_within_10_seeds() {
    let cfg = SimConfig::default().with_bugs(Bugs {
        ack_before_durable: true,
        ..Bugs::default()
    });
    assert!(hunt(&cfg, 10).is_some());
}

#[test]
fn catches_membership_changes_without_joint_consensus_within_200_seeds() {
    let cfg = SimConfig::default().with_bugs(Bugs {
        unsafe_membership_changes: true,
        ..Bugs::default()
    });
    assert!(hunt(&cfg, 200).is_some());
}

#[test]
fn catches_replying_to_a_vote_before_it_is_durable_within_200_seeds() {
    let cfg = harsh().with_bugs(Bugs {
        vote_before_durable: true,
        ..Bugs::default()
    });
    assert!(hunt(&cfg, 200).is_some());
}

#[test]
fn catches_read_index_without_a_heartbeat_round_within_2000_seeds() {
    let cfg = SimConfig::default().with_bugs(Bugs {
        read_index_without_heartbeat: true,
        ..Bugs::default()
    });
    assert!(hunt(&cfg, 2000).is_some());
}

#[test]
fn safe_and_live_with_pre_vote_check_quorum_and_leases_switched_off() {
    // Without pre-vote and check-quorum, removed servers can disrupt elections forever
    // (thesis §4.2.3), so liveness is only expected without membership changes.
    let mut cfg = SimConfig {
        ops: 500,
        lease_read_fraction: 0.0,
        ..SimConfig::default()
    };
    cfg.raft.pre_vote = false;
    cfg.raft.check_quorum = false;
    cfg.raft.lease_reads = false;
    cfg.faults.membership = false;
    assert_eq!(hunt(&cfg, 100), None);
}

// The production node under simulation (`sim::production`): the real runtime, log writer,
// applier, `DefaultStateMachineHandler` with sessions and snapshots, on simulated time.

use lockstep_core::sim::production::{runtime_bug_by_name, Simulation};

/// Runs seeds `0..limit` of `sim` on two threads; returns the first failing seed found.
fn hunt_production(sim: &Simulation, limit: u64) -> Option<(u64, &'static str)> {
    sim::hunt(limit, 2, |seed| sim.clone().with_seed(seed).run())
}

fn planted(name: &str) -> Simulation {
    Simulation::new(0).plant(runtime_bug_by_name(name).expect("a known bug name"))
}

#[test]
fn production_nodes_pass_many_seeds_with_every_fault_kind() {
    assert_eq!(hunt_production(&Simulation::new(0), 400), None);
    assert_eq!(
        hunt_production(&Simulation::new(0).persisted_kv(), 200),
        None
    );
}

#[test]
fn production_nodes_pass_many_seeds_with_membership_changes_on_five_processes() {
    let sim = Simulation::new(0).with_membership_changes(5);
    assert_eq!(hunt_production(&sim, 300), None);
    let r = sim.with_seed(4).run().unwrap();
    let changed = (0..50).any(|s| {
        Simulation::new(s)
            .with_membership_changes(5)
            .run()
            .is_ok_and(|r| r.membership_changes > 0)
    });
    assert!(changed, "some run changed the voters: {r:?}");
}

#[test]
fn a_production_seed_replays_bit_for_bit() {
    let a = Simulation::new(5).run().unwrap();
    let b = Simulation::new(5).run().unwrap();
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert!(a.ops_ok > 0 && a.elections > 0 && a.crashes > 0, "{a:?}");
    let bug = planted("lease-from-processed-ticks");
    let (seed, _) = hunt_production(&bug, 2000).expect("the planted bug is caught");
    let f = bug.clone().with_seed(seed).run().unwrap_err();
    let g = bug.with_seed(seed).run().unwrap_err();
    assert_eq!(f, g);
    assert!(
        f.replay.contains(&format!("--seed {seed}"))
            && f.replay.contains("--bug lease-from-processed-ticks"),
        "{}",
        f.replay
    );
}

#[test]
fn catches_sessions_lost_on_restart_within_2000_seeds() {
    assert!(hunt_production(&planted("sessions-lost-on-restart"), 2000).is_some());
}

#[test]
fn catches_a_lease_counted_in_processed_ticks_within_2000_seeds() {
    assert!(hunt_production(&planted("lease-from-processed-ticks"), 2000).is_some());
}

#[test]
fn catches_a_batch_reported_durable_before_its_sync_within_2000_seeds() {
    assert!(hunt_production(&planted("durable-before-sync"), 2000).is_some());
}

#[test]
fn catches_lease_reads_served_before_their_index_is_applied_within_2000_seeds() {
    assert!(hunt_production(&planted("lease-read-before-apply"), 2000).is_some());
}
