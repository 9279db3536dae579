//! The fuzz targets' allocation bound (`src/alloc.rs`), in a child process: an allocation
//! over the bound aborts it, naming the size; one under the bound does not.

use std::process::Command;

use kuzu_sync_fuzz::alloc::MAX_ALLOCATION;

const CHILD: &str = "KUZU_SYNC_FUZZ_ALLOC_CHILD";

fn child(bytes: usize) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "allocate_in_child", "--nocapture"])
        .env(CHILD, bytes.to_string())
        .output()
        .unwrap()
}

/// Not a check by itself: the body of the child process the tests below start.
#[test]
fn allocate_in_child() {
    if let Ok(n) = std::env::var(CHILD) {
        let v: Vec<u8> = Vec::with_capacity(n.parse().unwrap());
        std::hint::black_box(&v);
    }
}

#[test]
fn an_allocation_over_the_bound_aborts() {
    let out = child(MAX_ALLOCATION + 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child survived: {err}");
    assert!(
        err.contains(&format!("an allocation of {} bytes", MAX_ALLOCATION + 1)),
        "{err}"
    );
}

#[test]
fn an_allocation_at_the_bound_is_allowed() {
    let out = child(MAX_ALLOCATION);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
