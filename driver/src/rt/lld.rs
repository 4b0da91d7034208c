//! Runtime pieces for the rust-lld build, where no WDK library supplies them.

use core::alloc::{GlobalAlloc, Layout};

use windows_sys::Wdk::System::SystemServices::{ExAllocatePool2, ExFreePoolWithTag, KeBugCheckEx};
use windows_sys::Win32::System::Diagnostics::Debug::MANUALLY_INITIATED_CRASH;

use crate::nt::{POOL_ALIGNMENT, POOL_FLAG_NON_PAGED, tag};

/// Tag of allocations made through `alloc` collections.
const TAG_ALLOC: u32 = tag(b"CFal");

/// Non-paged pool with the driver's tag. Over-aligned layouts are refused (NULL) rather
/// than silently misaligned.
struct PoolAllocator;

// SAFETY: allocations are non-paged pool blocks of at least `layout.size()` bytes with
// pool alignment; larger alignments are refused; dealloc frees with the same tag.
unsafe impl GlobalAlloc for PoolAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > POOL_ALIGNMENT || layout.size() == 0 {
            return core::ptr::null_mut();
        }
        // SAFETY: non-paged allocation, valid at <= DISPATCH_LEVEL.
        unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, layout.size(), TAG_ALLOC) }.cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, with this tag.
        unsafe { ExFreePoolWithTag(ptr.cast(), TAG_ALLOC) }
    }
}

#[global_allocator]
static ALLOCATOR: PoolAllocator = PoolAllocator;

/// A panic in kernel mode is a driver bug with no safe way to continue: stop the machine
/// with a bug check that names the driver ('CFlt' as the first parameter).
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: KeBugCheckEx may be called at any IRQL and does not return.
    unsafe {
        KeBugCheckEx(
            MANUALLY_INITIATED_CRASH,
            u32::from_le_bytes(*b"CFlt") as usize,
            0,
            0,
            0,
        )
    };
    #[allow(clippy::empty_loop)]
    loop {}
}

// The prebuilt `core` references these; the kernel exports them. Declaring them here is
// what makes the linker resolve `core`'s references to ntoskrnl.exe imports.
#[allow(dead_code, reason = "referenced by core, not by this crate")]
#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    pub fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
    pub fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
    pub fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8;
    pub fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32;
    pub fn __chkstk();
}

// `_fltused` tells the MSVC runtime model that floating point is used; `core` references
// it. The unwinding `core` also references `__CxxFrameHandler3`: with panic=abort no Rust
// frame ever needs it, but the kernel's exception dispatcher may call it while unwinding
// an SEH exception through our frames, so it answers ExceptionContinueSearch (1).
// Neither is exported: only DriverEntry is.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".data",
    ".globl _fltused",
    "_fltused:",
    ".long 0",
    ".text",
    ".globl __CxxFrameHandler3",
    "__CxxFrameHandler3:",
    "mov eax, 1",
    "ret",
);

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".data",
    ".globl _fltused",
    "_fltused:",
    ".long 0",
    ".text",
    ".globl __CxxFrameHandler3",
    "__CxxFrameHandler3:",
    "mov w0, #1",
    "ret",
);
