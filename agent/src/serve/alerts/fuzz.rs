//! Fuzzing the payload parser (proptest-driven byte mutation of real payloads, and arbitrary
//! bytes): it never panics, and what it allocates stays within a small multiple of its input
//! (the body limit is enforced before parsing, so that bounds the memory of a call). The
//! inputs it does parse go through routing and the ledger too.
//!
//! Memory is measured by this test binary's global allocator, which forwards to the system's
//! and counts live bytes per thread, so that tests running in parallel do not disturb one
//! another's figures.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    time::{Duration, Instant},
};

use proptest::prelude::*;
use serde_json::json;

use super::{
    handler::BODY_LIMIT,
    intake::intake,
    ledger::Ledger,
    payload::{parse, samples},
    AlertRouting,
};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    LIVE.with(|live| {
        let now = live.get() + delta;
        live.set(now);
        PEAK.with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged
// and only adds bookkeeping in const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours; the caller upholds it.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            note(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours; the caller upholds it.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            note(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours; the caller upholds it.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours; the caller upholds it.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most bytes live at once on this thread while `f` runs, above what was live before.
fn peak_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, usize::try_from(peak - before).unwrap_or(0))
}

/// The bound asserted: a small multiple of the input plus a constant for fixed costs. The
/// worst measured is about 19x, alerts with one label and one annotation each: a B-tree map
/// of one entry takes a whole leaf (11 slots, about 540 bytes); 256 KiB of that is 5 MB.
fn bound(input: usize) -> usize {
    24 * input + 16 * 1024
}

/// Parses, and on success routes and records; panics propagate to proptest.
fn exercise(body: &[u8]) -> usize {
    let ((), peak) = peak_allocation(|| {
        if let Ok(payload) = parse(body) {
            let mut ledger = Ledger::new(Duration::from_secs(60), 16);
            let now = Instant::now();
            let got = intake(&payload, &AlertRouting::default(), &ledger, 1, now);
            ledger.commit(got.decision, now);
        }
    });
    peak
}

fn realistic_payload() -> impl Strategy<Value = Vec<u8>> {
    let alert = (
        prop_oneof![Just("firing"), Just("resolved")],
        prop_oneof![
            Just("BallastNodeCPUContention".to_string()),
            Just("BallastNodeMemoryPressure".to_string()),
            Just("NodeDiskFailing".to_string()),
            "[A-Za-z]{0,12}",
        ],
        proptest::option::of("[a-z0-9.-]{0,20}"),
        "[0-9a-f]{0,16}",
    );
    proptest::collection::vec(alert, 0..12).prop_map(|alerts| {
        let alerts = alerts
            .into_iter()
            .map(|(status, name, node, fingerprint)| {
                samples::alert(status, &name, node.as_deref(), &fingerprint)
            })
            .collect();
        samples::bytes(&samples::payload(alerts))
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Insert {
        at: usize,
        byte: u8,
    },
    Remove {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// Copies a slice elsewhere (repeats structure: nesting, duplicate keys).
    Splice {
        from: usize,
        len: usize,
        to: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>;
    let byte = prop_oneof![
        Just(b'{'),
        Just(b'['),
        Just(b'"'),
        Just(b'\\'),
        Just(b','),
        Just(b':'),
        any::<u8>()
    ];
    prop_oneof![
        (at(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (at(), byte).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        (at(), 1usize..64).prop_map(|(at, len)| Mutation::Remove { at, len }),
        at().prop_map(|at| Mutation::Truncate { at }),
        (at(), 1usize..256, at()).prop_map(|(from, len, to)| Mutation::Splice { from, len, to }),
    ]
}

fn apply(mut body: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = body.len().max(1);
        match *m {
            Mutation::Flip { at, bit } => {
                if let Some(b) = body.get_mut(at % n) {
                    *b ^= 1 << bit;
                }
            }
            Mutation::Insert { at, byte } => body.insert(at % (body.len() + 1), byte),
            Mutation::Remove { at, len } => {
                let start = at % n;
                let end = (start + len).min(body.len());
                body.drain(start.min(end)..end);
            }
            Mutation::Truncate { at } => body.truncate(at % n),
            Mutation::Splice { from, len, to } => {
                let start = from % n;
                let end = (start + len).min(body.len());
                let piece: Vec<u8> = body.get(start..end).unwrap_or_default().to_vec();
                let to = to % (body.len() + 1);
                body.splice(to..to, piece);
            }
        }
    }
    body.truncate(BODY_LIMIT);
    body
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn mutated_payloads_never_panic_and_stay_within_the_memory_bound(
        body in realistic_payload(),
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let body = apply(body, &mutations);
        let peak = exercise(&body);
        prop_assert!(peak <= bound(body.len()), "{peak} bytes for {} bytes of input", body.len());
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let peak = exercise(&body);
        prop_assert!(peak <= bound(body.len()), "{peak} bytes for {} bytes of input", body.len());
    }

    #[test]
    fn unmutated_payloads_parse(body in realistic_payload()) {
        prop_assert!(parse(&body).is_ok());
    }
}

/// Bodies built to make the parser allocate the most per input byte, each near the limit.
fn worst_cases() -> Vec<(&'static str, Vec<u8>)> {
    let fill = |unit: &dyn Fn(usize) -> String, budget: usize| {
        let mut out = Vec::new();
        let mut i = 0;
        // Each unit and its comma.
        while out.iter().map(|u: &String| u.len() + 1).sum::<usize>() + 300 < budget {
            out.push(unit(i));
            i += 1;
        }
        out
    };
    let budget = BODY_LIMIT - 100;
    let labels = fill(&|i| format!("\"{i:x}\":\"\""), budget).join(",");
    let tiny_alerts = fill(&|_| "{\"status\":\"firing\",\"labels\":{}}".into(), budget).join(",");
    let many_maps = fill(&|i| format!("{{\"status\":\"firing\",\"labels\":{{\"{i:x}\":\"\"}},\"annotations\":{{\"{i:x}\":\"\"}}}}"), budget).join(",");
    let nested = format!("{}{}", "[".repeat(budget / 2), "]".repeat(budget / 2));
    let escapes = "\\u00e9".repeat(budget / 6);
    vec![
        (
            "one alert with thousands of labels",
            format!("{{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{{\"status\":\"firing\",\"labels\":{{{labels}}}}}]}}").into_bytes(),
        ),
        (
            "group labels by the thousand",
            format!("{{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[],\"groupLabels\":{{{labels}}}}}").into_bytes(),
        ),
        (
            "the most empty alerts",
            format!("{{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{tiny_alerts}]}}").into_bytes(),
        ),
        (
            "alerts with one label and one annotation each",
            format!("{{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{many_maps}]}}").into_bytes(),
        ),
        ("deep nesting", format!("{{\"version\":{nested}}}").into_bytes()),
        ("deep nesting elsewhere", format!("{{\"version\":\"4\",\"x\":{nested}}}").into_bytes()),
        ("a long escaped version", format!("{{\"version\":\"{escapes}\"}}").into_bytes()),
        (
            "a long escaped annotation",
            format!("{{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[],\"commonAnnotations\":{{\"a\":\"{escapes}\"}}}}").into_bytes(),
        ),
        ("a huge number array as version", format!("{{\"version\":[{}0]}}", "0,".repeat(budget / 2)).into_bytes()),
    ]
}

#[test]
fn worst_case_bodies_stay_within_the_memory_bound() {
    for (name, body) in worst_cases() {
        assert!(body.len() <= BODY_LIMIT, "{name}: {} bytes", body.len());
        let peak = exercise(&body);
        assert!(
            peak <= bound(body.len()),
            "{name}: {peak} bytes for {} bytes of input ({:.1}x)",
            body.len(),
            peak as f64 / body.len() as f64
        );
    }
}

#[test]
fn the_allocation_counter_sees_allocations() {
    let (kept, peak) = peak_allocation(|| vec![0u8; 100_000]);
    assert!(peak >= 100_000, "{peak}");
    drop(kept);
    // A realistic payload costs a few times its size.
    let body = samples::bytes(&samples::payload(vec![
        json!({"status": "firing", "labels": {"alertname": "A"}});
        10
    ]));
    let peak = exercise(&body);
    assert!(peak > body.len(), "{peak} for {}", body.len());
}
