//! The protocol alone: 3 voters in memory, no I/O. Committed entries per second when the
//! leader receives proposals one at a time (batch 1) or 64 at a time (batch 64).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lockstep_benches::MemCluster;

fn commit_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol_3_voters_commit");
    let payload = Bytes::from(vec![7u8; 256]);
    for batch in [1usize, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            let mut cluster = MemCluster::new(3);
            b.iter(|| cluster.propose_and_commit(batch, &payload));
        });
    }
    group.finish();
}

criterion_group!(benches, commit_throughput);
criterion_main!(benches);
