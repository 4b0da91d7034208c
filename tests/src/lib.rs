//! The kernel model and the scenarios that drive cloudflt on any host.
