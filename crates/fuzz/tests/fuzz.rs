//! Replays each target's checked-in corpus and its seeds, then runs a fixed number of
//! mutants with a fixed seed (bounded in count, not time, so the result is the same on
//! every machine). `cargo xtask fuzz` runs the same targets for longer.

use lockstep_fuzz::{fuzz, hex, target, Budget, Options, ALLOC_BOUND};

fn round(name: &str, iterations: u64) {
    let t = target(name).expect("a target of that name");
    let r = fuzz(
        &t,
        &Options {
            seed: 0x5eed,
            budget: Budget::Iterations(iterations),
            save_inputs: None,
        },
    );
    eprintln!(
        "{name}: {} inputs ({} corpus, {} seeds) in {:.2} s ({:.0}/s), {} accepted, peak {} KiB",
        r.executions,
        r.corpus,
        r.seeds,
        r.elapsed.as_secs_f64(),
        r.rate(),
        r.accepted,
        r.peak_bytes >> 10
    );
    if let Some(f) = r.failure {
        panic!(
            "{name}: {:?} on {}: {}\ninput ({} bytes): {}",
            f.kind,
            f.origin,
            f.message,
            f.input.len(),
            hex(&f.input, 4096)
        );
    }
    assert!(
        r.corpus > 0,
        "{name}: the corpus in crates/fuzz/corpus/{name}/ is empty"
    );
    assert!(r.peak_bytes <= ALLOC_BOUND, "{name}: peak {}", r.peak_bytes);
    assert!(
        r.accepted > 0,
        "{name}: no input was accepted: the seeds are broken"
    );
}

#[test]
fn record_corpus_and_mutants() {
    round("record", 100_000);
}

#[test]
fn recovery_corpus_and_mutants() {
    round("recovery", 5_000);
}

#[test]
fn codec_corpus_and_mutants() {
    round("codec", 200_000);
}

#[test]
fn envelope_corpus_and_mutants() {
    round("envelope", 20_000);
}

#[test]
fn convert_corpus_and_mutants() {
    round("convert", 200_000);
}

fn no_seeds(_: &mut lockstep_fuzz::Rng) -> Vec<Vec<u8>> {
    vec![vec![1, 2, 3]]
}

#[test]
fn the_fuzzer_reports_a_panic_and_an_allocation_past_the_bound() {
    use lockstep_fuzz::{FailureKind, Target, Verdict};
    let run = |t: &Target| {
        fuzz(
            t,
            &Options {
                seed: 1,
                budget: Budget::Iterations(100),
                save_inputs: None,
            },
        )
        .failure
        .expect("a failure")
    };
    let panics = Target {
        name: "self-test-panic",
        about: "",
        seeds: no_seeds,
        run: |input| {
            if input.len() > 3 {
                panic!("too long");
            }
            Ok(Verdict::Accepted)
        },
        max_len: 64,
    };
    let f = run(&panics);
    assert_eq!(f.kind, FailureKind::Panic);
    assert!(f.message.contains("too long"), "{}", f.message);
    assert!(f.input.len() > 3);
    let allocates = Target {
        name: "self-test-alloc",
        about: "",
        seeds: no_seeds,
        run: |_| {
            // Zeroed pages are mapped lazily: counted by the allocator, never touched.
            let v = vec![0u8; ALLOC_BOUND + (1 << 20)];
            Ok(if v.is_empty() {
                Verdict::Rejected
            } else {
                Verdict::Accepted
            })
        },
        max_len: 64,
    };
    let f = run(&allocates);
    assert_eq!(f.kind, FailureKind::Allocation);
    assert_eq!(f.origin, "seed 0");
}
