//! The test harness itself: the 3-master cluster fixture comes up with every slot served.

mod support;

use support::{RedisCluster, raw_command};

#[test]
fn three_master_cluster_serves_every_slot() {
    let cluster = RedisCluster::start();
    assert_eq!(cluster.ports.len(), 3);
    let info = raw_command(cluster.ports[0], &["CLUSTER", "INFO"]).unwrap();
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    assert!(info.contains("cluster_known_nodes:3"), "{info}");
    // A key lands on exactly one master; the others redirect.
    let replies: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| raw_command(*p, &["SET", "astra:harness:k", "1"]).unwrap())
        .collect();
    assert_eq!(
        replies.iter().filter(|r| r.starts_with("+OK")).count(),
        1,
        "{replies:?}"
    );
    assert_eq!(
        replies.iter().filter(|r| r.starts_with("-MOVED")).count(),
        2,
        "{replies:?}"
    );
}
