//! The allocation bound of every fuzz target, without a sanitizer.
//!
//! libFuzzer's `-malloc_limit_mb` works only through a sanitizer's malloc hooks, and
//! AddressSanitizer makes the targets five times slower (`hub_session`: 160 against 890
//! executions/s). The code under test is safe Rust, so the fuzz runs go without a
//! sanitizer (`scripts/fuzz.sh`; `FUZZ_SANITIZER=address` brings it back) and this
//! allocator enforces the bound instead: a single allocation over [`MAX_ALLOCATION`] aborts
//! the process, which libFuzzer reports as a crash and saves the input. With a sanitizer
//! both limits apply. Total memory is bounded by libFuzzer's `-rss_limit_mb`, which needs
//! no sanitizer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;

/// The largest single allocation a fuzz target may make: 256 MiB, four times the largest
/// frame a peer may send (64 MiB), so a decoder that sizes a buffer from a peer's claim
/// is caught while a frame's own buffers are not.
pub const MAX_ALLOCATION: usize = 256 << 20;

/// [`System`], aborting on an allocation over [`MAX_ALLOCATION`].
pub struct Bounded;

#[cold]
fn too_large(size: usize) -> ! {
    // Formatting into stderr does not allocate.
    let _ = writeln!(
        std::io::stderr(),
        "==kuzu-sync-fuzz== ERROR: an allocation of {size} bytes, over the bound of \
         {MAX_ALLOCATION} (fuzz/src/alloc.rs)"
    );
    std::process::abort()
}

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            too_large(layout.size());
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            too_large(layout.size());
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            too_large(new_size);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Bounded = Bounded;
