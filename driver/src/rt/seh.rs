//! The image's two exception-guarded primitives, `cloudflt_seh_copy` and
//! `cloudflt_seh_call3`, in hand-written assembly for x64 and arm64 with the unwind data
//! an MSVC or clang `__try { … } __except (EXCEPTION_EXECUTE_HANDLER) { … }` gets.
//!
//! Rust has no `__try`, and a fault on a user address in kernel mode that no frame
//! handles is a bug check. Each function here is one frame whose `.pdata` entry names
//! `__C_specific_handler` (exported by ntoskrnl.exe) as its exception handler, with a C
//! scope table of one record as handler data: `Count = 1`, then
//! `{BeginAddress, EndAddress, HandlerAddress = 1, JumpTarget}`, image-relative. When an
//! exception is raised in `[BeginAddress, EndAddress)` of the frame, or unwinds through a
//! call made there, `__C_specific_handler` reads `HandlerAddress == 1` as the constant
//! filter EXCEPTION_EXECUTE_HANDLER and unwinds to `JumpTarget` with the exception code
//! as the return value (RtlUnwindEx's `ReturnValue`: `rax` on x64, `x0` on arm64); the
//! code at the jump target only tears the frame down and returns it. Nothing else in the
//! image takes part: the Rust callers see an ordinary function that returns an NTSTATUS.
//!
//! Why assembly and not a C shim: the build must need nothing but rustup's toolchain
//! (no clang on the build machines, DESIGN.md "any host"), and LLVM's integrated
//! assembler, which rustc carries, accepts the `.seh_*` directives for both COFF targets.
//! Both bodies are tiny and call nothing but the function they are handed.
//!
//! The try range covers the return address of the guarded `call`/`blr` (a `nop` follows
//! it inside the range): on x64 the dispatcher compares a caller frame's return address
//! with the scope; on arm64 `__C_specific_handler` steps back over the call when
//! `ControlPcIsUnwound` is set. Either way the call site is inside.
//!
//! The callers are in `nt::seh`, which declares these symbols. On the host the kernel
//! model defines them, with the same contract, over its model of user memory.

// The symbols are referenced through `nt::seh`'s `extern` block; `.globl` makes them
// visible to it across codegen units. They are not exported: only `DriverEntry` is.

// x64. Windows ABI: arguments in rcx, rdx, r8, r9; rsi and rdi are callee-saved; the
// direction flag is clear on entry. `rep movsb` leaves rdi/rsi/rcx where a fault stopped
// it; the handler path pops the saved rsi/rdi all the same.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".text",
    // NTSTATUS cloudflt_seh_copy(void *dst, const void *src, size_t len)
    ".globl cloudflt_seh_copy",
    ".def cloudflt_seh_copy",
    ".scl 2",
    ".type 32",
    ".endef",
    ".p2align 4",
    "cloudflt_seh_copy:",
    ".seh_proc cloudflt_seh_copy",
    "push rsi",
    ".seh_pushreg rsi",
    "push rdi",
    ".seh_pushreg rdi",
    ".seh_endprologue",
    "mov rdi, rcx",
    "mov rsi, rdx",
    "mov rcx, r8",
    "cloudflt_seh_copy_try:",
    "rep movsb",
    "nop",
    "cloudflt_seh_copy_end:",
    "xor eax, eax",
    "pop rdi",
    "pop rsi",
    "ret",
    "cloudflt_seh_copy_except:",
    "pop rdi",
    "pop rsi",
    "ret",
    ".seh_handler __C_specific_handler, @except",
    ".seh_handlerdata",
    ".long 1",
    ".long cloudflt_seh_copy_try@IMGREL",
    ".long cloudflt_seh_copy_end@IMGREL",
    ".long 1",
    ".long cloudflt_seh_copy_except@IMGREL",
    ".text",
    ".seh_endproc",
    // NTSTATUS cloudflt_seh_call3(f, a, b, c): f(a, b, c), its exceptions caught.
    ".globl cloudflt_seh_call3",
    ".def cloudflt_seh_call3",
    ".scl 2",
    ".type 32",
    ".endef",
    ".p2align 4",
    "cloudflt_seh_call3:",
    ".seh_proc cloudflt_seh_call3",
    // 32 bytes of home space for the callee, and rsp 16-aligned at the call.
    "sub rsp, 40",
    ".seh_stackalloc 40",
    ".seh_endprologue",
    "mov rax, rcx",
    "mov rcx, rdx",
    "mov rdx, r8",
    "mov r8, r9",
    "cloudflt_seh_call3_try:",
    "call rax",
    "nop",
    "cloudflt_seh_call3_end:",
    "xor eax, eax",
    "add rsp, 40",
    "ret",
    "cloudflt_seh_call3_except:",
    "add rsp, 40",
    "ret",
    ".seh_handler __C_specific_handler, @except",
    ".seh_handlerdata",
    ".long 1",
    ".long cloudflt_seh_call3_try@IMGREL",
    ".long cloudflt_seh_call3_end@IMGREL",
    ".long 1",
    ".long cloudflt_seh_call3_except@IMGREL",
    ".text",
    ".seh_endproc",
);

// arm64. Windows ABI: arguments in x0..x3, result in x0; x16 is an intra-procedure
// scratch register. The copy is a leaf with no prologue (nothing to unwind but the return
// through lr); the call saves fp/lr with the canonical `stp x29, x30, [sp, #-16]!`.
#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".text",
    ".globl cloudflt_seh_copy",
    ".def cloudflt_seh_copy",
    ".scl 2",
    ".type 32",
    ".endef",
    ".p2align 2",
    "cloudflt_seh_copy:",
    ".seh_proc cloudflt_seh_copy",
    ".seh_endprologue",
    "cloudflt_seh_copy_try:",
    "cbz x2, cloudflt_seh_copy_end",
    "cloudflt_seh_copy_loop:",
    "ldrb w3, [x1], #1",
    "strb w3, [x0], #1",
    "subs x2, x2, #1",
    "b.ne cloudflt_seh_copy_loop",
    "cloudflt_seh_copy_end:",
    "mov w0, #0",
    "ret",
    "cloudflt_seh_copy_except:",
    "ret",
    ".seh_handler __C_specific_handler, @except",
    ".seh_handlerdata",
    ".long 1",
    ".long cloudflt_seh_copy_try@IMGREL",
    ".long cloudflt_seh_copy_end@IMGREL",
    ".long 1",
    ".long cloudflt_seh_copy_except@IMGREL",
    ".text",
    ".seh_endproc",
    ".globl cloudflt_seh_call3",
    ".def cloudflt_seh_call3",
    ".scl 2",
    ".type 32",
    ".endef",
    ".p2align 2",
    "cloudflt_seh_call3:",
    ".seh_proc cloudflt_seh_call3",
    "stp x29, x30, [sp, #-16]!",
    ".seh_save_fplr_x 16",
    ".seh_endprologue",
    "mov x16, x0",
    "mov x0, x1",
    "mov x1, x2",
    "mov x2, x3",
    "cloudflt_seh_call3_try:",
    "blr x16",
    "nop",
    "cloudflt_seh_call3_end:",
    "mov w0, #0",
    ".seh_startepilogue",
    "ldp x29, x30, [sp], #16",
    ".seh_save_fplr_x 16",
    ".seh_endepilogue",
    "ret",
    "cloudflt_seh_call3_except:",
    ".seh_startepilogue",
    "ldp x29, x30, [sp], #16",
    ".seh_save_fplr_x 16",
    ".seh_endepilogue",
    "ret",
    ".seh_handler __C_specific_handler, @except",
    ".seh_handlerdata",
    ".long 1",
    ".long cloudflt_seh_call3_try@IMGREL",
    ".long cloudflt_seh_call3_end@IMGREL",
    ".long 1",
    ".long cloudflt_seh_call3_except@IMGREL",
    ".text",
    ".seh_endproc",
);

// `__C_specific_handler` comes from the kernel. The WDK build links ntoskrnl.lib, which
// has it; the rust-lld build imports it here. The `.seh_handler` references resolve to
// the import's thunk, as they do in an MSVC-built driver.
#[cfg(not(feature = "wdk"))]
#[allow(dead_code, reason = "referenced by the unwind data, not by Rust code")]
#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    pub fn __C_specific_handler();
}
