//! Tagged, non-paged, fallible allocations: the driver's own objects.
//!
//! Each object type has its own pool tag so `!poolused` and Driver Verifier's leak report
//! at unload name the culprit.

use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use windows_sys::Wdk::System::SystemServices::{ExAllocatePool2, ExFreePoolWithTag};

/// `POOL_FLAG_NON_PAGED` from `wdm.h` (not in windows-sys).
pub const POOL_FLAG_NON_PAGED: u64 = 0x0000_0000_0000_0040;

/// Kernel pool allocations are aligned to `MEMORY_ALLOCATION_ALIGNMENT` (16 on x64 and
/// arm64).
pub const POOL_ALIGNMENT: usize = 16;

/// A pool tag as it reads in the debugger: the four characters in memory order.
pub const fn tag(name: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*name)
}

/// The driver-state object.
pub(crate) const TAG_DRIVER: u32 = tag(b"CFdr");
/// A provider connection.
pub(crate) const TAG_CONNECTION: u32 = tag(b"CFcn");
/// A registered sync root.
pub(crate) const TAG_ROOT: u32 = tag(b"CFrt");
/// A stream's set of present ranges, and snapshots of it.
pub(crate) const TAG_RANGES: u32 = tag(b"CFrs");
/// The OPEN_REPARSE_LIST_ENTRY a create carries from pre- to post-create.
pub(crate) const TAG_OPEN_REPARSE: u32 = tag(b"CFor");

/// An owned `T` in non-paged pool, freed with its tag on drop.
///
/// # Invariants
/// `ptr` points to an initialised `T` allocated with `ExAllocatePool2` and `tag`, owned by
/// this box alone.
pub(crate) struct PoolBox<T> {
    ptr: NonNull<T>,
    tag: u32,
}

impl<T> PoolBox<T> {
    /// Moves `value` into a new non-paged allocation, or returns `None` when pool is
    /// exhausted. Callable at IRQL <= DISPATCH_LEVEL.
    pub(crate) fn try_new(value: T, tag: u32) -> Option<Self> {
        const {
            assert!(core::mem::align_of::<T>() <= POOL_ALIGNMENT);
            assert!(core::mem::size_of::<T>() > 0);
        }
        // SAFETY: non-paged allocation of a non-zero size is valid at <= DISPATCH_LEVEL;
        // the result is checked for NULL below.
        let raw = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, core::mem::size_of::<T>(), tag) };
        let ptr = NonNull::new(raw.cast::<T>())?;
        // SAFETY: `ptr` is a fresh allocation of `size_of::<T>()` bytes aligned to 16,
        // which the const assertion above shows is enough for `T`.
        unsafe { ptr.as_ptr().write(value) };
        // INVARIANT: allocated with `tag`, initialised, and not shared.
        Some(Self { ptr, tag })
    }

    /// A new all-zero `T` in non-paged pool (ExAllocatePool2 zeroes), built in place: for
    /// objects too large to pass through the kernel stack. `None` when pool is exhausted.
    ///
    /// # Safety
    /// All-zero bytes must be a valid `T`.
    pub(crate) unsafe fn try_zeroed(tag: u32) -> Option<Self> {
        const {
            assert!(core::mem::align_of::<T>() <= POOL_ALIGNMENT);
            assert!(core::mem::size_of::<T>() > 0);
        }
        // SAFETY: as in `try_new`; ExAllocatePool2 returns zeroed memory.
        let raw = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, core::mem::size_of::<T>(), tag) };
        let ptr = NonNull::new(raw.cast::<T>())?;
        // INVARIANT: allocated with `tag`, initialised (zero is a valid `T`, the caller's
        // contract), not shared.
        Some(Self { ptr, tag })
    }

    /// Gives up ownership, for handing the object to FltMgr as a cookie.
    pub(crate) fn into_raw(this: Self) -> NonNull<T> {
        let ptr = this.ptr;
        core::mem::forget(this);
        ptr
    }

    /// Takes back ownership of a pointer from [`PoolBox::into_raw`].
    ///
    /// # Safety
    /// `ptr` must come from `into_raw` of a `PoolBox<T>` with the same `tag`, and must not
    /// be used by anyone else afterwards.
    pub(crate) unsafe fn from_raw(ptr: NonNull<T>, tag: u32) -> Self {
        // INVARIANT: guaranteed by the caller.
        Self { ptr, tag }
    }
}

// SAFETY: the box owns its allocation alone (type invariant), so sending it sends the
// `T`; non-paged pool may be freed from any thread.
unsafe impl<T: Send> Send for PoolBox<T> {}

impl<T> Deref for PoolBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: by the type invariant the pointee is initialised and owned by `self`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for PoolBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes the access exclusive.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for PoolBox<T> {
    fn drop(&mut self) {
        // SAFETY: the pointee is initialised and owned by `self` (type invariant), and
        // nothing uses it after this.
        unsafe { core::ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: the allocation came from ExAllocatePool2 with `self.tag` (type
        // invariant); freeing non-paged pool is valid at <= DISPATCH_LEVEL.
        unsafe { ExFreePoolWithTag(self.ptr.as_ptr().cast(), self.tag) };
    }
}
