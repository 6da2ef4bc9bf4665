//! Storage on this machine's disk: the physical limit (a bare loop of 4 KiB write +
//! `fdatasync`, and 1 MiB writes + `fdatasync` for sequential bandwidth) next to the file log
//! store: single-entry append + sync latency, batched 256-byte appends, and recovery time;
//! and the same append figures for the sled and RocksDB log stores, so the backends compare
//! on one run. Everything runs in temporary directories on the same file system, in one
//! process.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lockstep_core::{Entry, EntryPayload, LogId, LogStore};
use lockstep_storage_file::{FileLogOptions, FileLogStore};

/// Bytes a benchmark may write before its file or log is reset (outside the timing).
const RESET_AT: u64 = 256 << 20;

fn bench_dir() -> tempfile::TempDir {
    // Next to the build output: the same disk the project works on.
    let base = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::tempdir_in(base).expect("temporary directory")
}

fn entry(i: u64, payload: &Bytes) -> Entry {
    Entry {
        log_id: LogId::new(1, i),
        payload: EntryPayload::Command {
            session: None,
            data: payload.clone(),
        },
    }
}

/// Writes `chunk`-sized blocks with an `fdatasync` after each.
fn raw_write_sync(c: &mut Criterion, name: &str, chunk: usize) {
    let dir = bench_dir();
    let path = dir.path().join("raw");
    let mut f = File::create(&path).expect("create");
    let block = vec![0x5Au8; chunk];
    let mut written = 0u64;
    let mut g = c.benchmark_group("storage");
    g.throughput(Throughput::Bytes(chunk as u64));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if written >= RESET_AT {
                    f.set_len(0).expect("truncate");
                    f = File::options().append(true).open(&path).expect("reopen");
                    f.sync_all().expect("sync");
                    written = 0;
                }
                let t = Instant::now();
                f.write_all(&block).expect("write");
                f.sync_data().expect("fdatasync");
                total += t.elapsed();
                written += chunk as u64;
            }
            total
        })
    });
    g.finish();
}

fn physical_limit(c: &mut Criterion) {
    raw_write_sync(c, "bare_4KiB_write_fdatasync", 4096);
    raw_write_sync(c, "bare_1MiB_write_fdatasync", 1 << 20);
}

fn open(dir: &Path) -> FileLogStore {
    FileLogStore::open_with(dir, FileLogOptions::default()).expect("open")
}

/// Appends `batch` entries to the store `open` creates and syncs once per iteration;
/// `backend` names it in the benchmark id.
fn append_sync<S: LogStore>(
    c: &mut Criterion,
    backend: &str,
    open: impl FnOnce(&Path) -> S,
    batch: usize,
    bytes_throughput: bool,
) {
    let dir = bench_dir();
    let mut s = open(dir.path());
    let payload = Bytes::from(vec![0xA5u8; 256]);
    let mut next = 1u64;
    let mut since_reset = 0u64;
    let mut g = c.benchmark_group("storage");
    if bytes_throughput {
        g.throughput(Throughput::Bytes(batch as u64 * 256));
    } else {
        g.throughput(Throughput::Elements(batch as u64));
    }
    let id = if bytes_throughput {
        format!("{backend}_log_append_sync_256B_bytes")
    } else {
        format!("{backend}_log_append_sync_256B")
    };
    g.bench_with_input(BenchmarkId::new(id, batch), &batch, |b, &batch| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if since_reset >= RESET_AT {
                    let last = s.bounds().1;
                    s.purge(last).expect("purge");
                    since_reset = 0;
                }
                let entries: Vec<Entry> = (next..next + batch as u64)
                    .map(|i| entry(i, &payload))
                    .collect();
                let t = Instant::now();
                s.append(&entries).expect("append");
                s.sync().expect("sync");
                total += t.elapsed();
                next += batch as u64;
                since_reset += batch as u64 * 300;
            }
            total
        })
    });
    g.finish();
}

fn file_log(c: &mut Criterion) {
    append_sync(c, "file", open, 1, false);
    append_sync(c, "file", open, 1024, false);
    append_sync(c, "file", open, 1024, true);
}

fn open_sled(dir: &Path) -> lockstep_storage_sled::SledLogStore {
    lockstep_storage_sled::SledLogStore::open(dir).expect("open sled")
}

fn open_rocksdb(dir: &Path) -> lockstep_storage_rocksdb::RocksLogStore {
    lockstep_storage_rocksdb::RocksLogStore::open(dir).expect("open rocksdb")
}

/// The other backends' log stores, measured the same way as the file store.
fn backend_logs(c: &mut Criterion) {
    append_sync(c, "sled", open_sled, 1, false);
    append_sync(c, "sled", open_sled, 1024, false);
    append_sync(c, "rocksdb", open_rocksdb, 1, false);
    append_sync(c, "rocksdb", open_rocksdb, 1024, false);
}

fn recovery(c: &mut Criterion) {
    let dir = bench_dir();
    let payload = Bytes::from(vec![0xA5u8; 256]);
    // LOCKSTEP_BENCH_RECOVERY_MIB=1024 measures the 1 GiB figure of the storage issue.
    let mib: u64 = std::env::var("LOCKSTEP_BENCH_RECOVERY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let size: u64 = mib << 20;
    let n = size / 302; // 256 data bytes + 38 of entry encoding + 8 of record header
    {
        let mut s = open(dir.path());
        let mut i = 1;
        while i <= n {
            let to = (i + 4095).min(n);
            let batch: Vec<Entry> = (i..=to).map(|k| entry(k, &payload)).collect();
            s.append(&batch).expect("append");
            i = to + 1;
        }
        s.sync().expect("sync");
    }
    let mut g = c.benchmark_group("storage");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(size));
    g.bench_function(format!("file_log_recovery_{mib}MiB"), |b| {
        b.iter(|| {
            let s = open(dir.path());
            assert_eq!(s.bounds().1.index, n);
        })
    });
    g.finish();
}

criterion_group!(benches, physical_limit, file_log, backend_logs, recovery);
criterion_main!(benches);
