//! Kernel pool: every allocation recorded with its tag and size, so frees with the wrong
//! tag, double frees and leaks at unload are caught, and allocation failure can be
//! injected.
//!
//! Memory is real host memory (zeroed, 16-byte aligned like `MEMORY_ALLOCATION_ALIGNMENT`),
//! since the driver reads and writes it.

use std::alloc::Layout;
use std::collections::HashMap;
use std::ffi::c_void;

use super::irql::{self, APC_LEVEL, DISPATCH_LEVEL};
use super::with_kernel;

/// `POOL_FLAG_NON_PAGED`.
const POOL_FLAG_NON_PAGED: u64 = 0x40;
/// `POOL_FLAG_PAGED`.
const POOL_FLAG_PAGED: u64 = 0x100;
/// `POOL_FLAG_USE_QUOTA`, `POOL_FLAG_UNINITIALIZED`, `POOL_FLAG_CACHE_ALIGNED`,
/// `POOL_FLAG_RAISE_ON_FAILURE` and the rest of the documented required/optional flags.
const POOL_FLAGS_KNOWN: u64 = 0x1 | 0x2 | 0x4 | 0x8 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200;
/// Pool alignment on 64-bit Windows.
const ALIGN: usize = 16;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Block {
    pub(crate) tag: u32,
    pub(crate) size: usize,
}

#[derive(Default)]
pub(crate) struct Pool {
    blocks: HashMap<usize, Block>,
    /// Allocations left until the injected failure; `None` for no failure.
    fail_in: Option<usize>,
}

impl Pool {
    pub(crate) fn fail_nth(&mut self, n: usize) {
        self.fail_in = Some(n.max(1));
    }

    pub(crate) fn bytes_with_tag(&self, tag: u32) -> usize {
        self.blocks
            .values()
            .filter(|b| b.tag == tag)
            .map(|b| b.size)
            .sum()
    }

    pub(crate) fn outstanding(&self) -> Vec<Block> {
        self.blocks.values().copied().collect()
    }

    /// Allocates zeroed pool; `None` when an injected failure fires.
    pub(crate) fn allocate(&mut self, size: usize, tag: u32) -> Option<*mut u8> {
        if let Some(n) = self.fail_in.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.fail_in = None;
                return None;
            }
        }
        let layout = Layout::from_size_align(size.max(1), ALIGN).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return None;
        }
        self.blocks.insert(ptr as usize, Block { tag, size });
        Some(ptr)
    }

    /// Frees a block; `Err` says what was wrong with the request.
    pub(crate) fn free(&mut self, ptr: *mut u8, tag: Option<u32>) -> Result<Block, String> {
        let Some(block) = self.blocks.get(&(ptr as usize)).copied() else {
            return Err(format!(
                "{ptr:p} is not an allocated pool block (double free?)"
            ));
        };
        if let Some(tag) = tag
            && tag != block.tag
        {
            return Err(format!(
                "freed with tag {} but allocated with tag {}",
                tag_name(tag),
                tag_name(block.tag)
            ));
        }
        self.blocks.remove(&(ptr as usize));
        let layout =
            Layout::from_size_align(block.size.max(1), ALIGN).map_err(|e| e.to_string())?;
        // SAFETY: allocated by `allocate` with this layout and removed from the table, so
        // freed once.
        unsafe { std::alloc::dealloc(ptr, layout) };
        Ok(block)
    }
}

/// A tag as the debugger shows it.
pub fn tag_name(tag: u32) -> String {
    tag.to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
        .collect()
}

/// ExAllocatePool2.
#[unsafe(no_mangle)]
pub extern "system" fn ExAllocatePool2(flags: u64, size: usize, tag: u32) -> *mut c_void {
    let paged = flags & POOL_FLAG_PAGED != 0;
    irql::check(
        "ExAllocatePool2",
        if paged { APC_LEVEL } else { DISPATCH_LEVEL },
    );
    with_kernel(|k| {
        if flags & !POOL_FLAGS_KNOWN != 0 || (paged == (flags & POOL_FLAG_NON_PAGED != 0)) {
            k.violation("ExAllocatePool2", format!("invalid pool flags {flags:#x}"));
            return std::ptr::null_mut();
        }
        if tag == 0 {
            k.violation("ExAllocatePool2", "tag 0 is invalid");
            return std::ptr::null_mut();
        }
        if size == 0 {
            k.violation("ExAllocatePool2", "zero-byte allocation");
        }
        k.pool
            .allocate(size, tag)
            .map_or(std::ptr::null_mut(), |p| p.cast())
    })
}

/// ExFreePoolWithTag.
#[unsafe(no_mangle)]
pub extern "system" fn ExFreePoolWithTag(ptr: *mut c_void, tag: u32) {
    irql::check("ExFreePoolWithTag", DISPATCH_LEVEL);
    with_kernel(|k| {
        if let Err(message) = k.pool.free(ptr.cast(), Some(tag)) {
            k.violation("ExFreePoolWithTag", message);
        }
    });
}
