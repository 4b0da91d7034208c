//! Link configuration for `cloudflt.sys`.
//!
//! With feature `wdk` (Windows + WDK) wdk-build configures everything, as in the
//! windows-drivers-rs samples. Otherwise, when building for a Windows target, the kernel
//! link arguments for rust-lld are emitted here rather than in `.cargo/config.toml`: they
//! then apply to this package alone (whose only linked artifact on Windows targets is the
//! image), and user-mode artifacts built for the same targets are not linked as drivers.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");

    #[cfg(feature = "wdk")]
    {
        if let Err(e) = wdk_build::configure_wdk_binary_build() {
            println!("cargo::error=wdk-build could not configure the driver build: {e}");
        }
        return;
    }

    #[allow(unreachable_code)]
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "windows" {
        return;
    }
    for arg in [
        "/DRIVER",
        "/SUBSYSTEM:NATIVE",
        "/ENTRY:DriverEntry",
        "/NODEFAULTLIB",
        // Sets IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY: the image must be signed to load.
        "/INTEGRITYCHECK",
        // Writes the PE checksum, which the kernel loader checks for drivers.
        "/RELEASE",
        "/NXCOMPAT",
        "/DYNAMICBASE",
        "/DEBUG:NONE",
        "/OPT:REF,ICF",
    ] {
        println!("cargo::rustc-link-arg={arg}");
    }
}
