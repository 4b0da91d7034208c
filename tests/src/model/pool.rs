//! Kernel pool: every allocation recorded with its tag and size, so frees with the wrong
//! tag, double frees and leaks at unload are caught, and allocation failure can be
//! injected.
//!
//! Memory is real host memory (zeroed, 16-byte aligned like `MEMORY_ALLOCATION_ALIGNMENT`),
//! since the driver reads and writes it.

use crate::model::fast::HashMap;
use std::alloc::Layout;
use std::ffi::c_void;

use super::irql::{self, APC_LEVEL, DISPATCH_LEVEL};
use super::with_kernel;

// Pool flags of wdm.h. The low 32 bits are "required" flags (an unknown one fails the
// call), the high 32 bits "optional" ones (ignored when unknown).
const POOL_FLAG_USE_QUOTA: u64 = 0x1;
const POOL_FLAG_UNINITIALIZED: u64 = 0x2;
const POOL_FLAG_SESSION: u64 = 0x4;
const POOL_FLAG_CACHE_ALIGNED: u64 = 0x8;
const POOL_FLAG_RAISE_ON_FAILURE: u64 = 0x20;
const POOL_FLAG_NON_PAGED: u64 = 0x40;
const POOL_FLAG_NON_PAGED_EXECUTE: u64 = 0x80;
const POOL_FLAG_PAGED: u64 = 0x100;
const REQUIRED_KNOWN: u64 = POOL_FLAG_USE_QUOTA
    | POOL_FLAG_UNINITIALIZED
    | POOL_FLAG_SESSION
    | POOL_FLAG_CACHE_ALIGNED
    | POOL_FLAG_RAISE_ON_FAILURE
    | POOL_FLAG_NON_PAGED
    | POOL_FLAG_NON_PAGED_EXECUTE
    | POOL_FLAG_PAGED;
/// Pool alignment on 64-bit Windows.
const ALIGN: usize = 16;

/// Who a block belongs to: the driver frees its own; FltMgr's (contexts, security
/// descriptors) go back only through FltMgr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Driver,
    FltMgr(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Block {
    pub(crate) tag: u32,
    pub(crate) size: usize,
    pub(crate) owner: Owner,
}

#[derive(Default)]
pub(crate) struct Pool {
    blocks: HashMap<usize, Block>,
    /// Allocations left until the injected failure; `None` for no failure.
    fail_in: Option<usize>,
    /// Bytes outstanding now, and the most outstanding at once since the last
    /// [`Pool::reset_peak`]: what a test of a memory bound reads.
    live: usize,
    peak: usize,
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

    /// Bytes outstanding now.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// The most bytes outstanding at once since the last reset.
    pub(crate) fn peak(&self) -> usize {
        self.peak
    }

    /// Starts measuring the peak from what is outstanding now.
    pub(crate) fn reset_peak(&mut self) {
        self.peak = self.live;
    }

    pub(crate) fn outstanding(&self) -> Vec<Block> {
        self.blocks.values().copied().collect()
    }

    /// The live block starting at `ptr`.
    pub(crate) fn block(&self, ptr: usize) -> Option<Block> {
        self.blocks.get(&ptr).copied()
    }

    /// The live block that holds all of `[ptr, ptr + len)`.
    pub(crate) fn block_holding(&self, ptr: usize, len: usize) -> Option<Block> {
        let end = ptr.checked_add(len)?;
        self.blocks
            .iter()
            .find(|(start, b)| **start <= ptr && end <= **start + b.size)
            .map(|(_, b)| *b)
    }

    /// Allocates zeroed pool; `None` when an injected failure fires.
    pub(crate) fn allocate(&mut self, size: usize, tag: u32, owner: Owner) -> Option<*mut u8> {
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
        self.blocks.insert(ptr as usize, Block { tag, size, owner });
        self.live += size;
        self.peak = self.peak.max(self.live);
        Some(ptr)
    }

    /// Frees a block on behalf of `by`; `Err` says what was wrong with the request.
    pub(crate) fn free(
        &mut self,
        ptr: *mut u8,
        tag: Option<u32>,
        by: Owner,
    ) -> Result<Block, String> {
        let Some(block) = self.blocks.get(&(ptr as usize)).copied() else {
            return Err(format!(
                "{ptr:p} is not an allocated pool block (double free?)"
            ));
        };
        if let (Owner::FltMgr(what), Owner::Driver) = (block.owner, by) {
            return Err(format!(
                "{ptr:p} is a {what} owned by FltMgr: release it through FltMgr, never free it"
            ));
        }
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
        self.live -= block.size;
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
        let pool_types = (flags
            & (POOL_FLAG_NON_PAGED | POOL_FLAG_NON_PAGED_EXECUTE | POOL_FLAG_PAGED))
            .count_ones();
        let required = flags & 0xFFFF_FFFF;
        if required & !REQUIRED_KNOWN != 0 || pool_types != 1 {
            k.violation("ExAllocatePool2", format!("invalid pool flags {flags:#x}: unknown required flags or not exactly one pool type"));
            return std::ptr::null_mut();
        }
        if tag == 0 {
            k.violation("ExAllocatePool2", "tag 0 is invalid");
            return std::ptr::null_mut();
        }
        if size == 0 {
            k.violation("ExAllocatePool2", "zero-byte allocation");
        }
        match k.pool.allocate(size, tag, Owner::Driver) {
            Some(p) => p.cast(),
            None => {
                if flags & POOL_FLAG_RAISE_ON_FAILURE != 0 {
                    // Windows raises STATUS_INSUFFICIENT_RESOURCES; Rust code has no SEH
                    // frame to catch it, so the machine would bug check.
                    k.violation(
                        "ExAllocatePool2",
                        "POOL_FLAG_RAISE_ON_FAILURE raised an exception no Rust frame can handle",
                    );
                }
                std::ptr::null_mut()
            }
        }
    })
}

/// ExFreePool: what frees blocks the kernel allocated for the caller
/// (SeLocateProcessImageName's name).
#[unsafe(no_mangle)]
pub extern "system" fn ExFreePool(ptr: *mut c_void) {
    irql::check("ExFreePool", DISPATCH_LEVEL);
    with_kernel(|k| {
        super::io::report_linked_entry_freed(k, "ExFreePool", ptr as usize);
        match k.pool.free(ptr.cast(), None, Owner::Driver) {
            Ok(block) => k.check_freed_timers("ExFreePool", ptr as usize, block.size),
            Err(message) => k.violation("ExFreePool", message),
        }
    });
}

/// ExFreePoolWithTag.
#[unsafe(no_mangle)]
pub extern "system" fn ExFreePoolWithTag(ptr: *mut c_void, tag: u32) {
    irql::check("ExFreePoolWithTag", DISPATCH_LEVEL);
    with_kernel(|k| {
        super::io::report_linked_entry_freed(k, "ExFreePoolWithTag", ptr as usize);
        match k.pool.free(ptr.cast(), Some(tag), Owner::Driver) {
            Ok(block) => k.check_freed_timers("ExFreePoolWithTag", ptr as usize, block.size),
            Err(message) => k.violation("ExFreePoolWithTag", message),
        }
    });
}
