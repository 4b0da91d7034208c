#!/usr/bin/env python3
"""CPU-emulation smoke test for cloudflt.sys (x64) under speakeasy.

    python harness.py PATH_TO_cloudflt.sys

Runs the real image's machine code in speakeasy (https://github.com/mandiant/speakeasy,
tested with speakeasy-emulator 1.5.11 / unicorn 1.0.2 / pefile 2024.8.26): DriverEntry,
then InstanceSetup, ConnectNotify, DisconnectNotify and FilterUnload called the way
Filter Manager calls them. Every import is answered by a model in this file; the
structures the driver hands over are read by their documented x64 layouts (the named
offsets below), not by anything the driver says about itself.

Prints one line per check (`ok   ...` or `FAIL expected / happened`), then
`emulation: N passed, M failed`. Exit status 0 only if every check passed.
"""

import json
import os
import struct
import sys
import tempfile
import traceback

try:
    import pefile
    import speakeasy
    import speakeasy.winenv.arch as e_arch
    from speakeasy.profiler import Run
except ImportError as exc:  # pragma: no cover - environment problem, not a driver problem
    print('FAIL speakeasy-emulator and pefile importable / %s' % exc)
    print('emulation: 0 passed, 1 failed')
    sys.exit(1)

# --------------------------------------------------------------------------------------
# Structure layouts, x64. Offsets from the declarations in fltKernel.h / wdm.h / ntifs.h
# (WDK 10.0.26100), cross-checked with offset_of! on the windows-sys 0.61.2 definitions
# (Wdk::Storage::FileSystem::Minifilters, Wdk::Foundation, Win32::System::IO).
# --------------------------------------------------------------------------------------

# fltKernel.h: typedef struct _FLT_REGISTRATION (FLT_REGISTRATION_VERSION_0203 layout, i.e.
# with SectionNotificationCallback as the last member).
REG_SIZE = 0x00                      # USHORT Size
REG_VERSION = 0x02                   # USHORT Version
REG_FLAGS = 0x04                     # FLT_REGISTRATION_FLAGS Flags (ULONG)
REG_CONTEXT_REGISTRATION = 0x08      # const FLT_CONTEXT_REGISTRATION *ContextRegistration
REG_OPERATION_REGISTRATION = 0x10    # const FLT_OPERATION_REGISTRATION *OperationRegistration
REG_FILTER_UNLOAD = 0x18             # PFLT_FILTER_UNLOAD_CALLBACK FilterUnloadCallback
REG_INSTANCE_SETUP = 0x20            # PFLT_INSTANCE_SETUP_CALLBACK InstanceSetupCallback
REG_INSTANCE_QUERY_TEARDOWN = 0x28   # PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK
REG_INSTANCE_TEARDOWN_START = 0x30   # PFLT_INSTANCE_TEARDOWN_CALLBACK
REG_INSTANCE_TEARDOWN_COMPLETE = 0x38
REG_GENERATE_FILE_NAME = 0x40
REG_NORMALIZE_NAME_COMPONENT = 0x48
REG_NORMALIZE_CONTEXT_CLEANUP = 0x50
REG_TRANSACTION_NOTIFICATION = 0x58
REG_NORMALIZE_NAME_COMPONENT_EX = 0x60
REG_SECTION_NOTIFICATION = 0x68      # PFLT_SECTION_CONFLICT_NOTIFICATION_CALLBACK
SIZEOF_FLT_REGISTRATION = 0x70
FLT_REGISTRATION_VERSION_0203 = 0x0203

# fltKernel.h: typedef struct _FLT_OPERATION_REGISTRATION
OPREG_MAJOR_FUNCTION = 0x00          # UCHAR MajorFunction
OPREG_FLAGS = 0x04                   # FLT_OPERATION_REGISTRATION_FLAGS Flags (ULONG)
OPREG_PRE_OPERATION = 0x08           # PFLT_PRE_OPERATION_CALLBACK PreOperation
OPREG_POST_OPERATION = 0x10          # PFLT_POST_OPERATION_CALLBACK PostOperation
OPREG_RESERVED1 = 0x18               # PVOID Reserved1
SIZEOF_FLT_OPERATION_REGISTRATION = 0x20
IRP_MJ_OPERATION_END = 0x80          # fltKernel.h: ((UCHAR)0x80)

# fltKernel.h: typedef struct _FLT_CONTEXT_REGISTRATION
CTXREG_CONTEXT_TYPE = 0x00           # FLT_CONTEXT_TYPE ContextType (USHORT)
CTXREG_FLAGS = 0x02                  # FLT_CONTEXT_REGISTRATION_FLAGS Flags (USHORT)
CTXREG_CLEANUP = 0x08                # PFLT_CONTEXT_CLEANUP_CALLBACK ContextCleanupCallback
CTXREG_SIZE = 0x10                   # SIZE_T Size
CTXREG_POOL_TAG = 0x18               # ULONG PoolTag
CTXREG_ALLOCATE = 0x20               # PFLT_CONTEXT_ALLOCATE_CALLBACK ContextAllocateCallback
CTXREG_FREE = 0x28                   # PFLT_CONTEXT_FREE_CALLBACK ContextFreeCallback
CTXREG_RESERVED1 = 0x30              # PVOID Reserved1
SIZEOF_FLT_CONTEXT_REGISTRATION = 0x38
FLT_CONTEXT_END = 0xFFFF             # fltKernel.h
FLT_INSTANCE_CONTEXT = 0x0002
FLT_STREAM_CONTEXT = 0x0008
FLT_STREAMHANDLE_CONTEXT = 0x0010

# fltKernel.h: typedef struct _FLT_RELATED_OBJECTS
RELOBJ_SIZE = 0x00                   # const USHORT Size
RELOBJ_TRANSACTION_CONTEXT = 0x02    # const USHORT TransactionContext
RELOBJ_FILTER = 0x08                 # PFLT_FILTER const Filter
RELOBJ_VOLUME = 0x10                 # PFLT_VOLUME const Volume
RELOBJ_INSTANCE = 0x18               # PFLT_INSTANCE const Instance
RELOBJ_FILE_OBJECT = 0x20            # PFILE_OBJECT const FileObject
RELOBJ_TRANSACTION = 0x28            # PKTRANSACTION const Transaction
SIZEOF_FLT_RELATED_OBJECTS = 0x30

# fltKernel.h: typedef struct _FLT_VOLUME_PROPERTIES
VOLPROP_DEVICE_TYPE = 0x00           # DEVICE_TYPE DeviceType (ULONG)
VOLPROP_DEVICE_CHARACTERISTICS = 0x04
VOLPROP_DEVICE_OBJECT_FLAGS = 0x08
VOLPROP_ALIGNMENT_REQUIREMENT = 0x0C
VOLPROP_SECTOR_SIZE = 0x10           # USHORT SectorSize
VOLPROP_FLAGS = 0x12                 # USHORT Flags
VOLPROP_FILE_SYSTEM_DRIVER_NAME = 0x18   # UNICODE_STRING
VOLPROP_FILE_SYSTEM_DEVICE_NAME = 0x28   # UNICODE_STRING
VOLPROP_REAL_DEVICE_NAME = 0x38          # UNICODE_STRING
SIZEOF_FLT_VOLUME_PROPERTIES = 0x48

# ntifs.h: typedef struct _FILE_FS_ATTRIBUTE_INFORMATION
FSATTR_FILE_SYSTEM_ATTRIBUTES = 0x00     # ULONG FileSystemAttributes
FSATTR_MAX_COMPONENT_NAME_LENGTH = 0x04  # LONG MaximumComponentNameLength
FSATTR_FILE_SYSTEM_NAME_LENGTH = 0x08    # ULONG FileSystemNameLength (bytes)
FSATTR_FILE_SYSTEM_NAME = 0x0C           # WCHAR FileSystemName[1]
FileFsAttributeInformation = 5           # wdm.h FS_INFORMATION_CLASS
FILE_SUPPORTS_REPARSE_POINTS = 0x00000080

# wdm.h: typedef struct _IO_STATUS_BLOCK (union { NTSTATUS Status; PVOID Pointer; }; ULONG_PTR Information)
IOSB_STATUS = 0x00
IOSB_INFORMATION = 0x08

# wdm.h / ntdef.h: typedef struct _OBJECT_ATTRIBUTES
OA_LENGTH = 0x00                     # ULONG Length
OA_ROOT_DIRECTORY = 0x08             # HANDLE RootDirectory
OA_OBJECT_NAME = 0x10                # PUNICODE_STRING ObjectName
OA_ATTRIBUTES = 0x18                 # ULONG Attributes
OA_SECURITY_DESCRIPTOR = 0x20        # PVOID SecurityDescriptor
OA_SECURITY_QOS = 0x28               # PVOID SecurityQualityOfService
SIZEOF_OBJECT_ATTRIBUTES = 0x30
OBJ_CASE_INSENSITIVE = 0x00000040
OBJ_KERNEL_HANDLE = 0x00000200

# ntdef.h: typedef struct _UNICODE_STRING
US_LENGTH = 0x00                     # USHORT Length (bytes, no terminator)
US_MAXIMUM_LENGTH = 0x02
US_BUFFER = 0x08                     # PWCH Buffer

FLT_PORT_ALL_ACCESS = 0x001F0001     # fltKernel.h: FLT_PORT_CONNECT | STANDARD_RIGHTS_ALL

# Major function codes (wdm.h IRP_MJ_*, fltKernel.h pseudo-operations as their low byte).
EXPECTED_MAJORS = {
    0x00: 'IRP_MJ_CREATE',
    0x03: 'IRP_MJ_READ',
    0x04: 'IRP_MJ_WRITE',
    0x06: 'IRP_MJ_SET_INFORMATION',
    0x05: 'IRP_MJ_QUERY_INFORMATION',
    0x0C: 'IRP_MJ_DIRECTORY_CONTROL',
    0x0D: 'IRP_MJ_FILE_SYSTEM_CONTROL',
    0x12: 'IRP_MJ_CLEANUP',
    0xF2: 'IRP_MJ_NETWORK_QUERY_OPEN',
    0xF9: 'IRP_MJ_QUERY_OPEN',
    0xFF: 'IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION',
}
EXPECTED_CONTEXTS = {
    FLT_INSTANCE_CONTEXT: 'instance',
    FLT_STREAM_CONTEXT: 'stream',
    FLT_STREAMHANDLE_CONTEXT: 'stream-handle',
}

# NTSTATUS values (ntstatus.h)
STATUS_SUCCESS = 0x00000000
STATUS_BUFFER_OVERFLOW = 0x80000005
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_INFO_LENGTH_MISMATCH = 0xC0000004
STATUS_BUFFER_TOO_SMALL = 0xC0000023
STATUS_REVISION_MISMATCH = 0xC0000059
STATUS_INVALID_INFO_CLASS = 0xC0000003
STATUS_INVALID_BUFFER_SIZE = 0xC0000206
STATUS_FLT_DO_NOT_ATTACH = 0xC01C000F
STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND = 0xC01C0016
STATUS_INVALID_USER_BUFFER = 0xC00000E8
STATUS_NAMES = {
    STATUS_SUCCESS: 'STATUS_SUCCESS',
    STATUS_BUFFER_OVERFLOW: 'STATUS_BUFFER_OVERFLOW',
    STATUS_INVALID_PARAMETER: 'STATUS_INVALID_PARAMETER',
    STATUS_INFO_LENGTH_MISMATCH: 'STATUS_INFO_LENGTH_MISMATCH',
    STATUS_BUFFER_TOO_SMALL: 'STATUS_BUFFER_TOO_SMALL',
    STATUS_REVISION_MISMATCH: 'STATUS_REVISION_MISMATCH',
    STATUS_INVALID_BUFFER_SIZE: 'STATUS_INVALID_BUFFER_SIZE',
    STATUS_FLT_DO_NOT_ATTACH: 'STATUS_FLT_DO_NOT_ATTACH',
    STATUS_INVALID_USER_BUFFER: 'STATUS_INVALID_USER_BUFFER',
    0xC0000001: 'STATUS_UNSUCCESSFUL',
    0xC0000002: 'STATUS_NOT_IMPLEMENTED',
    0xC0000010: 'STATUS_INVALID_DEVICE_REQUEST',
    0xC000009A: 'STATUS_INSUFFICIENT_RESOURCES',
    0xC0000184: 'STATUS_INVALID_DEVICE_STATE',
    0xC00000BB: 'STATUS_NOT_SUPPORTED',
}

# InstanceSetup inputs (fltKernel.h FLT_FILESYSTEM_TYPE, wdm.h FILE_DEVICE_*)
FLTFL_INSTANCE_SETUP_AUTOMATIC_ATTACHMENT = 0x1
FILE_DEVICE_DISK_FILE_SYSTEM = 0x08
FILE_DEVICE_NETWORK_FILE_SYSTEM = 0x14
FLT_FSTYPE_NTFS = 2
FLT_FSTYPE_FAT = 3
NTFS_ATTRIBUTES = 0x03E702FF         # what a Windows 11 NTFS volume reports

# Connection context (proto/src/connect.rs): magic, u16 version, u16 header size,
# u32 total size, u32 flags.
CONNECT_MAGIC = b'CFLT'
CONNECT_HEADER_SIZE = 16
CONNECT_FLAG_MANAGEMENT = 0x1          # a management client: no body

# Port messages (proto/src/msg.rs): a 16-byte header (u16 kind, u16 version, u32 length,
# u64 request id), then the kind's fixed part; the reply (u16 version, 2 reserved, i32
# status, u64 request id, u32 payload length, 4 reserved, payload) in the output buffer.
PROTOCOL_VERSION = 1
KIND_CLEAR_IMAGE_RULES = 0x0203        # fixed part: 8 reserved bytes
REPLY_HEADER_SIZE = 24

# ntddk.h / winnt.h
MM_COPY_MEMORY_VIRTUAL = 0x2
PAGE_READWRITE = 0x04

# Handles the FltMgr model hands out: distinctive and unmapped, so a driver that
# dereferences an opaque handle faults instead of reading something plausible.
H_FILTER = 0xF17_0000_0001
H_SERVER_PORT = 0xF17_0000_0002
H_CLIENT_PORT = 0xF17_0000_0003
H_MANAGER_PORT = 0xF17_0000_0004
H_SECURE_BASE = 0xF17_0000_3000       # MmSecureVirtualMemory's handles
H_PROCESS = 0xF17_0000_5000           # the calling process's EPROCESS (an administrator's)
H_TOKEN = 0xF17_0000_5800             # its primary token
# The ntoskrnl exports the driver looks up with MmGetSystemRoutineAddress that the
# harness models; any other name is not found (NULL), as for a routine the kernel lacks.
DYNAMIC_ROUTINES = ('ZwCreateKey', 'ZwSetValueKey', 'ZwDeleteValueKey', 'ZwEnumerateValueKey',
                    'ZwFlushKey', 'ZwClose')
STATUS_NO_MORE_ENTRIES = 0x8000001A
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_INVALID_HANDLE = 0xC0000008
H_VOLUME_BASE = 0xF17_0000_1000
H_INSTANCE_BASE = 0xF17_0000_2000

POOL_REDZONE = 0x10
POOL_REDZONE_BYTE = 0xFD
POOL_FREED_BYTE = 0xDD


# The process id ConnectNotify sees as the connecting provider's.
PROVIDER_PID = 0x1234


def status_name(v):
    v &= 0xFFFFFFFF
    name = STATUS_NAMES.get(v)
    return '0x%08X (%s)' % (v, name) if name else '0x%08X' % v


def tag_str(tag):
    return (tag & 0xFFFFFFFF).to_bytes(4, 'little').decode('latin1')


def patch_stack_commit(path, commit=0x6000):
    """speakeasy sizes its one emulated stack from SizeOfStackCommit (lld's default is 0x1000)."""
    pe = pefile.PE(path)
    pe.OPTIONAL_HEADER.SizeOfStackCommit = max(pe.OPTIONAL_HEADER.SizeOfStackCommit, commit)
    if pe.OPTIONAL_HEADER.SizeOfStackReserve < pe.OPTIONAL_HEADER.SizeOfStackCommit:
        pe.OPTIONAL_HEADER.SizeOfStackReserve = pe.OPTIONAL_HEADER.SizeOfStackCommit
    pe.OPTIONAL_HEADER.CheckSum = pe.generate_checksum()
    data = bytes(pe.write())
    pe.close()
    return data


class Harness:
    def __init__(self, image_path, overrides=None):
        self.overrides = overrides or {}
        self.results = []             # (ok, text)
        self.calls = []               # chronological call log: dicts seq/phase/api/args/ret
        self.phase = 'load'
        self.unexpected = []          # (phase, api)
        self.hook_errors = []         # (phase, api, traceback)
        self.pool = {}                # addr -> dict(tag, size, phase, seq)
        self.pool_freed = {}          # addr -> dict(...) of freed blocks
        self.spin_locks = {}          # KSPIN_LOCK addr -> held
        self.pool_errors = []         # text
        self.contexts = {}            # addr -> dict(type, size, refs, phase)
        self.work_items = {}          # FltAllocateGenericWorkItem handle -> phase allocated
        self.work_items_freed = set()
        self.timers = {}              # KTIMER addr -> queued (KeSetTimer since init/cancel)
        self.security_descriptors = {}  # addr -> freed?
        self.registry = {}            # key path (upper case) -> {value name (upper): bytes}
        self.key_handles = {}         # handle -> key path, while open
        self.file_handles = {}        # FltCreateFileEx2 handle -> (path, flags), while open
        self.next_handle = 0xF17_0000_4000
        self.token_refs = 0           # PsReferencePrimaryToken references not yet released
        self.secures = {}             # MmSecureVirtualMemory handle -> dict(addr, size, probe, phase, seq)
        self.secure_refuses = False   # MmSecureVirtualMemory returns NULL (the range went bad)
        self.secure_errors = []       # text
        self.registration = None      # snapshot taken inside FltRegisterFilter
        self.port = None              # snapshot taken inside FltCreateCommunicationPort
        self.fs_attributes = NTFS_ATTRIBUTES
        self.run_info = {}            # phase -> (ret, error)

        cfg_path = os.path.join(os.path.dirname(speakeasy.__file__), 'configs', 'default.json')
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg['timeout'] = 20               # seconds per emulation start
        cfg['max_api_count'] = 5000
        cfg['analysis']['strings'] = False
        cfg['analysis']['memory_tracing'] = False
        cfg['api_hammering']['enabled'] = False
        self.se = speakeasy.Speakeasy(config=cfg)

        # One catch-all hook: every import call of every module comes through dispatch(),
        # so an API without a model here ends the run as "unexpected" even if speakeasy
        # has a built-in handler for it.
        self.models = self._models()
        self.se.add_api_hook(self._dispatch, '*', '*', argc=0)

        # speakeasy names the module after the file: load it as cloudflt.sys.
        self._tmp = tempfile.TemporaryDirectory(prefix='cloudflt-emu-')
        sys_path = os.path.join(self._tmp.name, 'cloudflt.sys')
        with open(sys_path, 'wb') as f:
            f.write(patch_stack_commit(image_path))
        self.module = self.se.load_module(path=sys_path)
        self.emu = self.se.emu
        self.image_base = self.module.get_base()
        self.image_end = self.image_base + self.module.get_image_size()
        self.code_ranges = []
        for s in self.module.sections:
            if s.Characteristics & 0x20000000:   # IMAGE_SCN_MEM_EXECUTE
                start = self.image_base + s.VirtualAddress
                self.code_ranges.append((start, start + max(s.Misc_VirtualSize, 1)))

    # ---------------------------------------------------------------- memory helpers
    def read(self, addr, n):
        return bytes(self.emu.mem_read(addr, n))

    def u16(self, addr):
        return struct.unpack('<H', self.read(addr, 2))[0]

    def u32(self, addr):
        return struct.unpack('<I', self.read(addr, 4))[0]

    def u64(self, addr):
        return struct.unpack('<Q', self.read(addr, 8))[0]

    def write(self, addr, data):
        self.emu.mem_write(addr, bytes(data))

    def alloc(self, size, tag):
        addr = self.emu.mem_map(max(size, 1), tag='emu.harness.' + tag)
        self.write(addr, b'\0' * max(size, 1))
        return addr

    def read_unicode_string(self, addr):
        """UNICODE_STRING by its Length (speakeasy's helper reads to a NUL instead)."""
        length = self.u16(addr + US_LENGTH)
        buf = self.u64(addr + US_BUFFER)
        if not buf or not length:
            return ''
        return self.read(buf, length).decode('utf-16le', errors='replace')

    def is_code(self, addr):
        return any(lo <= addr < hi for lo, hi in self.code_ranges)

    # ---------------------------------------------------------------- call log
    def log(self, api, args, ret=None):
        rec = {'seq': len(self.calls), 'phase': self.phase, 'api': api, 'args': list(args), 'ret': ret}
        self.calls.append(rec)
        return rec

    def find(self, api, phase=None):
        return [c for c in self.calls if c['api'] == api and (phase is None or c['phase'] == phase)]

    def in_phase(self, phase):
        return [c for c in self.calls if c['phase'] == phase]

    # ---------------------------------------------------------------- hook plumbing
    def _end_run(self, emu, error):
        emu.curr_run.error = error
        # What speakeasy's own ExitProcess does: the code hook sees run_complete before the
        # next instruction (emu.stop() alone lets the instruction after the call run).
        emu.enable_code_hook()
        emu.run_complete = True

    def _dispatch(self, emu, api_name, func, params):
        mod, _, name = api_name.partition('.')
        try:
            model = self.models.get(name)
            if model is None:
                self.log(api_name, [])
                self.unexpected.append((self.phase, api_name))
                self._end_run(emu, {'type': 'unexpected_api', 'api_name': api_name})
                return 0
            argc, fn = model
            args = emu.get_func_argv(e_arch.CALL_CONV_STDCALL, argc) if argc else []
            rec = self.log(name, args)
            ret = fn(*args)
            rec['ret'] = ret
            return ret
        except Exception:
            tb = traceback.format_exc()
            self.hook_errors.append((self.phase, api_name, tb))
            self._end_run(emu, {'type': 'hook_exception', 'api_name': api_name, 'traceback': tb})
            return 0

    # ---------------------------------------------------------------- API models
    def _models(self):
        ov = self.overrides
        m = {
            # fltmgr.sys
            'FltRegisterFilter': (3, self.FltRegisterFilter),
            'FltUnregisterFilter': (1, self.FltUnregisterFilter),
            'FltStartFiltering': (1, lambda flt: STATUS_SUCCESS),
            'FltBuildDefaultSecurityDescriptor': (2, self.FltBuildDefaultSecurityDescriptor),
            'FltFreeSecurityDescriptor': (1, self.FltFreeSecurityDescriptor),
            'FltCreateCommunicationPort': (8, self.FltCreateCommunicationPort),
            'FltCloseCommunicationPort': (1, lambda port: 0),
            'FltCloseClientPort': (2, self.FltCloseClientPort),
            'FltQueryVolumeInformation': (5, self.FltQueryVolumeInformation),
            'FltGetVolumeProperties': (4, self.FltGetVolumeProperties),
            'FltAllocateContext': (5, self.FltAllocateContext),
            'FltSetInstanceContext': (4, self.FltSetInstanceContext),
            'FltReleaseContext': (1, self.FltReleaseContext),
            # ntoskrnl.exe
            'ExAllocatePool2': (3, self.ExAllocatePool2),
            'ExFreePoolWithTag': (2, self.ExFreePoolWithTag),
            'KeBugCheckEx': (5, self.KeBugCheckEx),
            'PsGetCurrentProcessId': (0, lambda: PROVIDER_PID),
            'MmGetSystemRoutineAddress': (1, self.MmGetSystemRoutineAddress),
            'ZwCreateKey': (7, self.ZwCreateKey),
            'ZwSetValueKey': (6, self.ZwSetValueKey),
            'ZwDeleteValueKey': (2, self.ZwDeleteValueKey),
            'ZwEnumerateValueKey': (6, self.ZwEnumerateValueKey),
            'ZwFlushKey': (1, self.ZwFlushKey),
            'ZwClose': (1, self.ZwClose),
            'FltCreateFileEx2': (16, self.FltCreateFileEx2),
            'FltClose': (1, self.FltClose),
            'IoGetCurrentProcess': (0, lambda: H_PROCESS),
            'PsReferencePrimaryToken': (1, self.PsReferencePrimaryToken),
            'PsDereferencePrimaryToken': (1, self.PsDereferencePrimaryToken),
            'SeTokenIsAdmin': (1, lambda token: 1 if token == H_TOKEN else 0),
            'KeAcquireInStackQueuedSpinLock': (2, self.KeAcquireInStackQueuedSpinLock),
            'KeReleaseInStackQueuedSpinLock': (1, self.KeReleaseInStackQueuedSpinLock),
            'KeInitializeEvent': (3, self.KeInitializeEvent),
            'KeSetEvent': (3, self.KeSetEvent),
            'KeResetEvent': (1, self.KeResetEvent),
            'KeWaitForSingleObject': (5, self.KeWaitForSingleObject),
            'FltAllocateGenericWorkItem': (0, self.FltAllocateGenericWorkItem),
            'FltFreeGenericWorkItem': (1, self.FltFreeGenericWorkItem),
            'KeInitializeTimerEx': (2, self.KeInitializeTimerEx),
            'KeInitializeDpc': (3, lambda dpc, routine, context: 0),
            'KeSetTimer': (3, self.KeSetTimer),
            'KeCancelTimer': (1, self.KeCancelTimer),
            'KeFlushQueuedDpcs': (0, lambda: 0),
            'FltCbdqInitialize': (8, lambda *args: STATUS_SUCCESS),
            'MmCopyMemory': (5, self.MmCopyMemory),
            'MmSecureVirtualMemory': (3, self.MmSecureVirtualMemory),
            'MmUnsecureVirtualMemory': (1, self.MmUnsecureVirtualMemory),
            'memset': (3, self.memset),
            'memcpy': (3, self.memmove),
            'memmove': (3, self.memmove),
            'memcmp': (3, self.memcmp),
            '__chkstk': (0, lambda: None),   # None keeps RAX: the caller subtracts it from RSP
        }
        m.update(ov.get('models', {}))
        return m

    def FltRegisterFilter(self, driver, registration, ret_filter):
        # Copy everything now: FLT_REGISTRATION may live on DriverEntry's stack.
        raw = self.read(registration, SIZEOF_FLT_REGISTRATION)
        snap = {
            'driver': driver,
            'Size': struct.unpack_from('<H', raw, REG_SIZE)[0],
            'Version': struct.unpack_from('<H', raw, REG_VERSION)[0],
            'Flags': struct.unpack_from('<I', raw, REG_FLAGS)[0],
        }
        for key, off in (('ContextRegistration', REG_CONTEXT_REGISTRATION),
                         ('OperationRegistration', REG_OPERATION_REGISTRATION),
                         ('FilterUnloadCallback', REG_FILTER_UNLOAD),
                         ('InstanceSetupCallback', REG_INSTANCE_SETUP),
                         ('InstanceQueryTeardownCallback', REG_INSTANCE_QUERY_TEARDOWN),
                         ('InstanceTeardownStartCallback', REG_INSTANCE_TEARDOWN_START),
                         ('InstanceTeardownCompleteCallback', REG_INSTANCE_TEARDOWN_COMPLETE),
                         ('SectionNotificationCallback', REG_SECTION_NOTIFICATION)):
            snap[key] = struct.unpack_from('<Q', raw, off)[0]
        snap['operations'], snap['operations_error'] = self._read_table(
            snap['OperationRegistration'], SIZEOF_FLT_OPERATION_REGISTRATION, 64,
            lambda b: b[OPREG_MAJOR_FUNCTION] == IRP_MJ_OPERATION_END,
            lambda b: {'major': b[OPREG_MAJOR_FUNCTION],
                       'flags': struct.unpack_from('<I', b, OPREG_FLAGS)[0],
                       'pre': struct.unpack_from('<Q', b, OPREG_PRE_OPERATION)[0],
                       'post': struct.unpack_from('<Q', b, OPREG_POST_OPERATION)[0],
                       'reserved': struct.unpack_from('<Q', b, OPREG_RESERVED1)[0]})
        snap['contexts'], snap['contexts_error'] = self._read_table(
            snap['ContextRegistration'], SIZEOF_FLT_CONTEXT_REGISTRATION, 16,
            lambda b: struct.unpack_from('<H', b, CTXREG_CONTEXT_TYPE)[0] == FLT_CONTEXT_END,
            lambda b: {'type': struct.unpack_from('<H', b, CTXREG_CONTEXT_TYPE)[0],
                       'flags': struct.unpack_from('<H', b, CTXREG_FLAGS)[0],
                       'cleanup': struct.unpack_from('<Q', b, CTXREG_CLEANUP)[0],
                       'size': struct.unpack_from('<Q', b, CTXREG_SIZE)[0],
                       'tag': struct.unpack_from('<I', b, CTXREG_POOL_TAG)[0],
                       'alloc': struct.unpack_from('<Q', b, CTXREG_ALLOCATE)[0],
                       'free': struct.unpack_from('<Q', b, CTXREG_FREE)[0]})
        self.registration = snap
        self.write(ret_filter, struct.pack('<Q', H_FILTER))
        return STATUS_SUCCESS

    def _read_table(self, addr, stride, limit, is_end, decode):
        """Entries up to the terminator; (entries, error text or None)."""
        if not addr:
            return [], 'NULL table'
        entries = []
        try:
            for i in range(limit):
                b = self.read(addr + i * stride, stride)
                if is_end(b):
                    return entries, None
                entries.append(decode(b))
        except Exception as exc:
            return entries, 'unreadable at entry %d (%s)' % (len(entries), exc)
        return entries, 'no terminator within %d entries' % limit

    def FltUnregisterFilter(self, flt):
        # FltMgr drops the references it holds on contexts (instance teardown).
        for ctx in self.contexts.values():
            ctx['refs'] -= ctx.pop('fltmgr_refs', 0)
        return 0

    def FltBuildDefaultSecurityDescriptor(self, psd, access):
        sd = self.alloc(0x14, 'SECURITY_DESCRIPTOR')
        # SECURITY_DESCRIPTOR_RELATIVE: Revision 1, Control SE_SELF_RELATIVE|SE_DACL_PRESENT.
        self.write(sd, struct.pack('<BBHIIII', 1, 0, 0x8004, 0, 0, 0, 0))
        self.security_descriptors[sd] = {'access': access & 0xFFFFFFFF, 'freed': 0}
        self.write(psd, struct.pack('<Q', sd))
        return STATUS_SUCCESS

    def FltFreeSecurityDescriptor(self, sd):
        if sd in self.security_descriptors:
            self.security_descriptors[sd]['freed'] += 1
        return 0

    def FltCreateCommunicationPort(self, flt, pport, oa, cookie, connect, disconnect, message, maxconn):
        raw = self.read(oa, SIZEOF_OBJECT_ATTRIBUTES)    # copy now: on the driver's stack
        name_ptr = struct.unpack_from('<Q', raw, OA_OBJECT_NAME)[0]
        self.port = {
            'filter': flt,
            'oa_length': struct.unpack_from('<I', raw, OA_LENGTH)[0],
            'root': struct.unpack_from('<Q', raw, OA_ROOT_DIRECTORY)[0],
            'name': self.read_unicode_string(name_ptr) if name_ptr else None,
            'attributes': struct.unpack_from('<I', raw, OA_ATTRIBUTES)[0],
            'sd': struct.unpack_from('<Q', raw, OA_SECURITY_DESCRIPTOR)[0],
            'sqos': struct.unpack_from('<Q', raw, OA_SECURITY_QOS)[0],
            'cookie': cookie, 'connect': connect, 'disconnect': disconnect,
            'message': message, 'max_connections': maxconn & 0xFFFFFFFF,
        }
        self.write(pport, struct.pack('<Q', H_SERVER_PORT))
        return STATUS_SUCCESS

    def MmGetSystemRoutineAddress(self, name):
        routine = self.read_unicode_string(name)
        self.calls[-1]['routine'] = routine
        if routine not in DYNAMIC_ROUTINES:
            return 0
        # speakeasy resolves a call through this address as ntoskrnl.<routine>, which the
        # catch-all hook sends to the model of that name.
        return self.emu.get_proc('ntoskrnl', routine)

    def _handle(self):
        self.next_handle += 8
        return self.next_handle

    def _oa_name(self, oa):
        raw = self.read(oa, SIZEOF_OBJECT_ATTRIBUTES)
        name_ptr = struct.unpack_from('<Q', raw, OA_OBJECT_NAME)[0]
        return self.read_unicode_string(name_ptr) if name_ptr else None

    def ZwCreateKey(self, phandle, access, oa, title, cls, options, pdisposition):
        path = self._oa_name(oa)
        if path is None:
            return STATUS_INVALID_PARAMETER
        key = path.upper()
        created = key not in self.registry
        self.registry.setdefault(key, {})
        h = self._handle()
        self.key_handles[h] = key
        self.write(phandle, struct.pack('<Q', h))
        if pdisposition:
            self.write(pdisposition, struct.pack('<I', 1 if created else 2))
        return STATUS_SUCCESS

    def ZwSetValueKey(self, h, name, title, kind, data, size):
        key = self.key_handles.get(h)
        if key is None:
            return STATUS_INVALID_HANDLE
        self.registry[key][self.read_unicode_string(name).upper()] = (kind, self.read(data, size))
        return STATUS_SUCCESS

    def ZwDeleteValueKey(self, h, name):
        key = self.key_handles.get(h)
        if key is None:
            return STATUS_INVALID_HANDLE
        return (STATUS_SUCCESS if self.registry[key].pop(self.read_unicode_string(name).upper(), None)
                is not None else STATUS_OBJECT_NAME_NOT_FOUND)

    def ZwEnumerateValueKey(self, h, index, cls, buf, length, presult):
        key = self.key_handles.get(h)
        if key is None:
            return STATUS_INVALID_HANDLE
        values = list(self.registry[key].values())
        if index >= len(values):
            return STATUS_NO_MORE_ENTRIES
        if cls != 2:     # only KEY_VALUE_PARTIAL_INFORMATION is modelled
            return STATUS_INVALID_PARAMETER
        kind, data = values[index]
        info = struct.pack('<III', 0, kind, len(data)) + data
        if presult:
            self.write(presult, struct.pack('<I', len(info)))
        if length < 12:
            return STATUS_BUFFER_TOO_SMALL
        self.write(buf, info[:length])
        return STATUS_SUCCESS if length >= len(info) else STATUS_BUFFER_OVERFLOW

    def ZwFlushKey(self, h):
        return STATUS_SUCCESS if h in self.key_handles else STATUS_INVALID_HANDLE

    def ZwClose(self, h):
        if self.key_handles.pop(h, None) is None:
            return STATUS_INVALID_HANDLE
        return STATUS_SUCCESS

    def FltCreateFileEx2(self, flt, instance, phandle, pfo, access, oa, iosb, alloc, attrs,
                         share, disposition, options, ea, ealen, flags, dctx):
        path = self._oa_name(oa)
        h = self._handle()
        self.file_handles[h] = (path, flags)
        self.calls[-1]['path'] = path
        self.write(phandle, struct.pack('<Q', h))
        if iosb:
            self.write(iosb, struct.pack('<QQ', STATUS_SUCCESS, 1))    # FILE_OPENED
        return STATUS_SUCCESS

    def FltClose(self, h):
        self.file_handles.pop(h, None)
        return STATUS_SUCCESS

    def PsReferencePrimaryToken(self, process):
        if process != H_PROCESS:
            return 0
        self.token_refs += 1
        return H_TOKEN

    def PsDereferencePrimaryToken(self, token):
        self.token_refs -= 1
        return 0

    def FltCloseClientPort(self, flt, pclient):
        client = self.u64(pclient)
        self.calls[-1]['client_port'] = client
        self.write(pclient, struct.pack('<Q', 0))        # FltCloseClientPort NULLs *ClientPort
        return 0

    def FltQueryVolumeInformation(self, instance, iosb, buf, length, cls):
        length &= 0xFFFFFFFF
        cls &= 0xFFFFFFFF
        if cls != FileFsAttributeInformation:
            self.write(iosb, struct.pack('<QQ', STATUS_INVALID_INFO_CLASS, 0))
            return STATUS_INVALID_INFO_CLASS
        if length < FSATTR_FILE_SYSTEM_NAME:
            self.write(iosb, struct.pack('<QQ', STATUS_INFO_LENGTH_MISMATCH, 0))
            return STATUS_INFO_LENGTH_MISMATCH
        name = 'NTFS'.encode('utf-16le')
        data = struct.pack('<IiI', self.fs_attributes, 255, len(name)) + name
        status = STATUS_SUCCESS
        if len(data) > length:
            data, status = data[:length], STATUS_BUFFER_OVERFLOW
        self.write(buf, data)
        self.write(iosb, struct.pack('<QQ', status, len(data)))
        return status

    def FltGetVolumeProperties(self, volume, props, length, plen):
        length &= 0xFFFFFFFF
        names = ['\\FileSystem\\Ntfs', '\\Ntfs', '\\Device\\HarddiskVolume3']
        encoded = [n.encode('utf-16le') for n in names]
        need = SIZEOF_FLT_VOLUME_PROPERTIES + sum(len(e) for e in encoded)
        if plen:
            self.write(plen, struct.pack('<I', need))
        if length < SIZEOF_FLT_VOLUME_PROPERTIES:
            return STATUS_BUFFER_TOO_SMALL
        fixed = bytearray(SIZEOF_FLT_VOLUME_PROPERTIES)
        struct.pack_into('<I', fixed, VOLPROP_DEVICE_TYPE, FILE_DEVICE_DISK_FILE_SYSTEM)
        struct.pack_into('<I', fixed, VOLPROP_ALIGNMENT_REQUIREMENT, 1)   # FILE_WORD_ALIGNMENT
        struct.pack_into('<H', fixed, VOLPROP_SECTOR_SIZE, self.overrides.get('sector_size', 4096))
        status = STATUS_SUCCESS
        at = props + SIZEOF_FLT_VOLUME_PROPERTIES
        end = props + length
        for off, e in zip((VOLPROP_FILE_SYSTEM_DRIVER_NAME, VOLPROP_FILE_SYSTEM_DEVICE_NAME,
                           VOLPROP_REAL_DEVICE_NAME), encoded):
            if at + len(e) > end:
                status = STATUS_BUFFER_OVERFLOW
                break
            self.write(at, e)
            struct.pack_into('<HHIQ', fixed, off, len(e), len(e), 0, at)
            at += len(e)
        self.write(props, fixed)
        return status

    def FltAllocateContext(self, flt, ctype, size, pooltype, pctx):
        ctype &= 0xFFFF
        regs = [c for c in (self.registration or {}).get('contexts', []) if c['type'] == ctype]
        if not regs:
            return STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND
        ctx = self.alloc(size, 'FLT_CONTEXT')
        self.contexts[ctx] = {'type': ctype, 'size': size, 'refs': 1, 'phase': self.phase}
        self.write(pctx, struct.pack('<Q', ctx))
        return STATUS_SUCCESS

    def FltSetInstanceContext(self, instance, op, new, pold):
        if pold:
            self.write(pold, struct.pack('<Q', 0))
        ctx = self.contexts.get(new)
        if ctx is not None:
            ctx['refs'] += 1                       # FltMgr keeps its own reference
            ctx['fltmgr_refs'] = ctx.get('fltmgr_refs', 0) + 1
            ctx['instance'] = instance
        return STATUS_SUCCESS

    def FltReleaseContext(self, ctx):
        c = self.contexts.get(ctx)
        if c is not None:
            c['refs'] -= 1
        return 0

    def ExAllocatePool2(self, flags, size, tag):
        rounded = (size + 15) & ~15
        addr = self.emu.mem_map(rounded + POOL_REDZONE, tag='emu.pool.' + tag_str(tag))
        self.write(addr, b'\0' * size + bytes([POOL_REDZONE_BYTE]) * (rounded + POOL_REDZONE - size))
        self.pool[addr] = {'tag': tag & 0xFFFFFFFF, 'size': size, 'rounded': rounded,
                           'phase': self.phase, 'seq': len(self.calls) - 1}
        return addr

    def ExFreePoolWithTag(self, addr, tag):
        tag &= 0xFFFFFFFF
        block = self.pool.pop(addr, None)
        if block is None:
            what = 'double free' if addr in self.pool_freed else 'free of an address ExAllocatePool2 never returned'
            self.pool_errors.append('%s: ExFreePoolWithTag(0x%x, %r) is a %s' % (self.phase, addr, tag_str(tag), what))
            return 0
        if block['tag'] != tag:
            self.pool_errors.append('%s: block 0x%x allocated with tag %r freed with tag %r'
                                    % (self.phase, addr, tag_str(block['tag']), tag_str(tag)))
        tail = self.read(addr + block['size'], block['rounded'] + POOL_REDZONE - block['size'])
        if any(b != POOL_REDZONE_BYTE for b in tail):
            self.pool_errors.append('%s: block 0x%x (%r, %d bytes) was overrun past its end'
                                    % (self.phase, addr, tag_str(block['tag']), block['size']))
        self.write(addr, bytes([POOL_FREED_BYTE]) * block['size'])   # poison: use-after-free reads garbage
        block['freed_tag'] = tag
        self.pool_freed[addr] = block
        self.calls[-1]['block'] = block
        return 0

    # wdm.h: KLOCK_QUEUE_HANDLE { KSPIN_LOCK_QUEUE { Next, Lock }, OldIrql }: the lock's
    # address is kept at offset 8, so the release finds the lock it frees.
    def KeAcquireInStackQueuedSpinLock(self, lock, handle):
        if self.spin_locks.get(lock):
            self._end_run(self.emu, {'type': 'deadlock',
                                     'what': 'spin lock %#x acquired while held' % lock})
            return 0
        self.spin_locks[lock] = True
        self.write(handle + 8, lock.to_bytes(8, 'little'))
        return 0

    def KeReleaseInStackQueuedSpinLock(self, handle):
        lock = self.u64(handle + 8)
        if not self.spin_locks.get(lock):
            self._end_run(self.emu, {'type': 'lock', 'what': 'released spin lock %#x not held' % lock})
            return 0
        self.spin_locks[lock] = False
        return 0

    # wdm.h: DISPATCHER_HEADER starts a KEVENT; SignalState is the LONG at offset 4.
    def KeInitializeEvent(self, event, kind, state):
        self.write(event + 4, (1 if state else 0).to_bytes(4, 'little'))
        return 0

    def KeSetEvent(self, event, increment, wait):
        previous = self.u32(event + 4)
        self.write(event + 4, (1).to_bytes(4, 'little'))
        return previous

    def KeResetEvent(self, event):
        previous = self.u32(event + 4)
        self.write(event + 4, (0).to_bytes(4, 'little'))
        return previous

    # A wait in the harness can only be for something already signalled (one thread, no
    # DPCs run): anything else would block for ever, so it ends the run.
    def KeWaitForSingleObject(self, obj, reason, mode, alertable, timeout):
        if self.u32(obj + 4) == 0:
            self._end_run(self.emu, {'type': 'deadlock',
                                     'what': 'KeWaitForSingleObject(%#x) on an object never signalled' % obj})
        return STATUS_SUCCESS

    # fltKernel.h: FltAllocateGenericWorkItem returns an opaque PFLT_GENERIC_WORKITEM.
    def FltAllocateGenericWorkItem(self):
        item = self.alloc(64, 'FLT_GENERIC_WORKITEM')
        self.work_items[item] = self.phase
        return item

    def FltFreeGenericWorkItem(self, item):
        if self.work_items.pop(item, None) is None:
            what = 'double free' if item in self.work_items_freed else 'free of an item never allocated'
            self.pool_errors.append('%s: FltFreeGenericWorkItem(0x%x) is a %s' % (self.phase, item, what))
        self.work_items_freed.add(item)
        return 0

    def KeInitializeTimerEx(self, timer, kind):
        self.timers[timer] = False
        return 0

    def KeSetTimer(self, timer, due, dpc):
        was = self.timers.get(timer, False)
        self.timers[timer] = True
        return 1 if was else 0

    def KeCancelTimer(self, timer):
        was = self.timers.get(timer, False)
        self.timers[timer] = False
        return 1 if was else 0

    # ntddk.h: MmCopyMemory(TargetAddress, MM_COPY_ADDRESS SourceAddress, NumberOfBytes,
    # Flags, *NumberOfBytesTransferred). The 8-byte union is passed by value, so the
    # second argument is the source address itself.
    def MmCopyMemory(self, target, source, length, flags, ptransferred):
        if flags & 0xFFFFFFFF != MM_COPY_MEMORY_VIRTUAL:
            return STATUS_INVALID_PARAMETER
        self.write(target, self.read(source, length))
        self.write(ptransferred, struct.pack('<Q', length))
        return STATUS_SUCCESS

    # ntddk.h: HANDLE MmSecureVirtualMemory(Address, Size, ProbeMode); NULL when the range
    # cannot be secured (here: when the case says the provider already spoiled it).
    def MmSecureVirtualMemory(self, addr, size, probe):
        if self.secure_refuses:
            return 0
        handle = H_SECURE_BASE + 0x10 * (len(self.secures) + 1)
        self.secures[handle] = {'addr': addr, 'size': size, 'probe': probe & 0xFFFFFFFF,
                                'phase': self.phase, 'seq': len(self.calls) - 1, 'live': True}
        return handle

    # ntddk.h: VOID MmUnsecureVirtualMemory(SecureHandle). The secured bytes are kept as
    # they are now, so a write after the unsecure shows.
    def MmUnsecureVirtualMemory(self, handle):
        entry = self.secures.get(handle)
        if entry is None or not entry['live']:
            self.secure_errors.append('%s: MmUnsecureVirtualMemory(0x%x) of no live secure handle'
                                      % (self.phase, handle))
            return 0
        entry['live'] = False
        entry['unsecured_seq'] = len(self.calls) - 1
        entry['bytes_at_unsecure'] = self.read(entry['addr'], entry['size'])
        return 0

    def KeBugCheckEx(self, code, p1, p2, p3, p4):
        self._end_run(self.emu, {'type': 'bugcheck', 'code': hex(code & 0xFFFFFFFF),
                                 'params': [hex(p) for p in (p1, p2, p3, p4)]})
        return 0

    def memset(self, dest, c, n):
        self.write(dest, bytes([c & 0xFF]) * n)    # speakeasy's own raises for c > 0xff
        return dest

    def memmove(self, dest, src, n):
        if n:
            self.write(dest, self.read(src, n))
        return dest

    def memcmp(self, a, b, n):
        for x, y in zip(self.read(a, n), self.read(b, n)):
            if x != y:
                return (x - y) & 0xFFFFFFFF
        return 0

    # ---------------------------------------------------------------- running code
    def _maps_snapshot(self):
        return {id(m) for m in self.emu.maps}

    def _settle(self, before):
        """After a run that faulted, speakeasy leaves the untagged page it mapped at the faulting
        address (tmp_maps is only cleared by a later instruction hook, and not at all for the
        NULL page), which can land on the import thunks and break every later call. Unmap
        the untagged maps this run created so the next callback starts clean."""
        emu = self.emu
        for mm in [m for m in emu.maps if id(m) not in before and m.tag is None]:
            try:
                emu.mem_unmap(mm.base, mm.size)
            except Exception:
                pass
            emu.maps.remove(mm)
        emu.tmp_maps = []

    def run_driver_entry(self):
        self.phase = 'DriverEntry'
        before = self._maps_snapshot()
        self.se.run_module(self.module)
        self._settle(before)
        run = self.emu.runs[0]
        self.driver_object = run.args[0] if run.args else None
        self.run_info[self.phase] = (run.ret_val, run.error)
        return run.ret_val, run.error

    def call(self, phase, addr, args):
        """addr(*args) with a correct x64 frame: speakeasy's own call() puts arguments 5+
        directly above the return address (no home space) and enters with RSP 16-aligned.
        Here: return address at [rsp], home space, arg 5 at [rsp+0x28], rsp % 16 == 8."""
        self.phase = phase
        emu = self.emu
        n = len(emu.runs)
        before = self._maps_snapshot()
        emu.reset_stack(emu.stack_base)
        rsp0 = emu.get_stack_ptr()
        for reg, v in zip(('rcx', 'rdx', 'r8', 'r9'), args[:4]):
            emu.reg_write(reg, v)
        extra = args[4:]
        top = (rsp0 - 8 * len(extra) - 0x20) & ~0xF      # 16-aligned start of the home space
        for i, v in enumerate(extra):
            emu.write_ptr(top + 0x20 + 8 * i, v)
        emu.set_stack_ptr(top - 8 + 0x28)   # _exec_run writes the return hook at sp - 0x28
        run = Run()
        run.type = phase
        run.start_addr = addr
        run.args = []
        emu.add_run(run)
        emu.start()
        self._settle(before)
        run = emu.runs[n]
        self.run_info[phase] = (run.ret_val, run.error)
        return run.ret_val & 0xFFFFFFFF, run.error

    # ---------------------------------------------------------------- reporting
    def check(self, ok, ok_text, expected=None, happened=None):
        if ok:
            self.results.append((True, 'ok   ' + ok_text))
        else:
            self.results.append((False, 'FAIL %s / %s' % (expected or ok_text, happened)))
        return ok

    def describe_error(self, error):
        if not error:
            return None
        t = error.get('type')
        if t == 'hook_exception':
            return 'Python exception in the %s model:\n%s' % (
                error.get('api_name'), indent(error.get('traceback', '')))
        if t == 'unexpected_api':
            return 'the driver called %s, which the harness does not model' % error.get('api_name')
        if t == 'unsupported_api':
            return 'the driver called unsupported API %s' % error.get('api_name')
        if t == 'bugcheck':
            return 'KeBugCheckEx(%s, %s)' % (error.get('code'), ', '.join(error.get('params', [])))
        keep = {k: error[k] for k in ('type', 'pc', 'address', 'instr', 'api_name') if k in error}
        return 'emulation error %s' % keep


def indent(text):
    return '\n'.join('     | ' + line for line in text.rstrip().splitlines())


def fmt_majors(majors):
    return '{%s}' % ', '.join('0x%02X' % m for m in sorted(majors))


# ------------------------------------------------------------------------ the checks
def run_checks(h):
    # 1. DriverEntry --------------------------------------------------------------
    ret, err = h.run_driver_entry()
    de_ok = False
    if err:
        h.check(False, '', 'DriverEntry returned STATUS_SUCCESS', h.describe_error(err))
    else:
        de_ok = h.check(ret & 0xFFFFFFFF == STATUS_SUCCESS, 'DriverEntry returned STATUS_SUCCESS',
                        'DriverEntry returned STATUS_SUCCESS', 'it returned %s' % status_name(ret))

    # 2. FLT_REGISTRATION -----------------------------------------------------------
    reg = h.registration
    reg_calls = h.find('FltRegisterFilter')
    if not reg:
        h.check(False, '', 'FltRegisterFilter called once with a registration',
                'FltRegisterFilter was called %d times' % len(reg_calls))
    else:
        h.check(len(reg_calls) == 1 and reg['driver'] == h.driver_object,
                'FltRegisterFilter called once, with the DriverObject DriverEntry received',
                'FltRegisterFilter(DriverObject=0x%x) once' % (h.driver_object or 0),
                '%d call(s), DriverObject 0x%x' % (len(reg_calls), reg['driver']))
        h.check(reg['Size'] == SIZEOF_FLT_REGISTRATION and reg['Version'] == FLT_REGISTRATION_VERSION_0203,
                'FLT_REGISTRATION Size 0x%X, Version 0x%04X' % (SIZEOF_FLT_REGISTRATION, FLT_REGISTRATION_VERSION_0203),
                'FLT_REGISTRATION Size 0x%X and Version 0x%04X' % (SIZEOF_FLT_REGISTRATION, FLT_REGISTRATION_VERSION_0203),
                'Size 0x%X, Version 0x%04X' % (reg['Size'], reg['Version']))
        ops = reg['operations']
        majors = [o['major'] for o in ops]
        problems = []
        if reg['operations_error']:
            problems.append('operation table %s' % reg['operations_error'])
        if len(majors) != len(set(majors)):
            problems.append('duplicate majors %s' % fmt_majors({m for m in majors if majors.count(m) > 1}))
        if set(majors) != set(EXPECTED_MAJORS):
            missing = set(EXPECTED_MAJORS) - set(majors)
            extra = set(majors) - set(EXPECTED_MAJORS)
            problems.append('majors %s (missing %s, extra %s)' % (fmt_majors(majors), fmt_majors(missing), fmt_majors(extra)))
        for o in ops:
            if not h.is_code(o['pre']):
                problems.append('major 0x%02X PreOperation 0x%x is not in the image code' % (o['major'], o['pre']))
            if o['post'] and not h.is_code(o['post']):
                problems.append('major 0x%02X PostOperation 0x%x is not in the image code' % (o['major'], o['post']))
        h.check(not problems,
                'operation table: exactly %s, each with a PreOperation in the image' % fmt_majors(EXPECTED_MAJORS),
                'operation table of exactly %s with PreOperations in the image' % fmt_majors(EXPECTED_MAJORS),
                '; '.join(problems))
        ctxs = reg['contexts']
        types = [c['type'] for c in ctxs]
        problems = []
        if reg['contexts_error']:
            problems.append('context table %s' % reg['contexts_error'])
        if sorted(types) != sorted(EXPECTED_CONTEXTS):
            problems.append('context types %s' % ['0x%X' % t for t in types])
        for c in ctxs:
            if c['size'] == 0:
                problems.append('context type 0x%X has Size 0' % c['type'])
            for key in ('cleanup', 'alloc', 'free'):
                if c[key] and not h.is_code(c[key]):
                    problems.append('context type 0x%X %s callback 0x%x is not in the image code' % (c['type'], key, c[key]))
        h.check(not problems,
                'context table: %s, terminated by FLT_CONTEXT_END (%s)' % (
                    ', '.join('%s (%d)' % (EXPECTED_CONTEXTS.get(c['type'], '?'), c['type']) for c in ctxs),
                    ', '.join('%d bytes %r' % (c['size'], tag_str(c['tag'])) for c in ctxs)),
                'context table of instance (2), stream (8), stream-handle (16) contexts ending in 0xFFFF',
                '; '.join(problems))
        bad = [k for k in ('FilterUnloadCallback', 'InstanceSetupCallback') if not h.is_code(reg[k])]
        h.check(not bad, 'FilterUnloadCallback and InstanceSetupCallback point into the image code',
                'FilterUnloadCallback and InstanceSetupCallback in the image code',
                ', '.join('%s = 0x%x' % (k, reg[k]) for k in bad))

    # 3. the port ---------------------------------------------------------------------
    port = h.port
    create = h.find('FltCreateCommunicationPort')
    sd_builds = h.find('FltBuildDefaultSecurityDescriptor')
    sd_frees = h.find('FltFreeSecurityDescriptor')
    if not port:
        h.check(False, '', 'FltCreateCommunicationPort called', 'it was not called')
    else:
        problems = []
        if len(create) != 1:
            problems.append('called %d times' % len(create))
        if port['filter'] != H_FILTER:
            problems.append('Filter 0x%x is not the registered filter 0x%x' % (port['filter'], H_FILTER))
        if port['oa_length'] != SIZEOF_OBJECT_ATTRIBUTES:
            problems.append('OBJECT_ATTRIBUTES.Length 0x%x' % port['oa_length'])
        if port['root']:
            problems.append('RootDirectory 0x%x' % port['root'])
        if port['name'] != '\\CloudFltPort':
            problems.append('name "%s"' % port['name'])
        if not port['attributes'] & OBJ_KERNEL_HANDLE:
            problems.append('Attributes 0x%x lack OBJ_KERNEL_HANDLE' % port['attributes'])
        if not port['max_connections']:
            problems.append('MaxConnections 0')
        for k in ('connect', 'disconnect', 'message'):
            if not h.is_code(port[k]):
                problems.append('%s callback 0x%x not in the image code' % (k, port[k]))
        h.check(not problems,
                'port %s: OBJ_KERNEL_HANDLE (Attributes 0x%x), MaxConnections %d, callbacks in the image'
                % (port['name'], port['attributes'], port['max_connections']),
                'port \\CloudFltPort, OBJ_KERNEL_HANDLE, MaxConnections > 0, callbacks in the image',
                '; '.join(problems))
        # The descriptor is the driver's own self-relative one: SYSTEM and Administrators
        # FLT_PORT_ALL_ACCESS, Authenticated Users FLT_PORT_CONNECT, nothing else.
        problems = []
        try:
            sd = h.read(port['sd'], 20)
            rev, _, control, owner, group, sacl, dacl = struct.unpack('<BBHIIII', sd)
            if rev != 1 or control != 0x8004 or dacl == 0:
                problems.append('revision %d, control 0x%x, DACL at %d' % (rev, control, dacl))
            else:
                _, _, acl_size, count, _ = struct.unpack('<BBHHH', h.read(port['sd'] + dacl, 8))
                acl = h.read(port['sd'] + dacl, acl_size)
                aces, at = [], 8
                for _ in range(count):
                    kind, _, size, mask = struct.unpack_from('<BBHI', acl, at)
                    aces.append((kind, mask, bytes(acl[at + 8:at + size])))
                    at += size
                want = [(0, FLT_PORT_ALL_ACCESS, bytes([1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0])),
                        (0, FLT_PORT_ALL_ACCESS,
                         bytes([1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0])),
                        (0, 1, bytes([1, 1, 0, 0, 0, 0, 0, 5, 11, 0, 0, 0]))]
                if aces != want:
                    problems.append('ACEs %r' % aces)
        except Exception as e:    # unreadable descriptor
            problems.append('descriptor 0x%x unreadable: %s' % (port['sd'], e))
        if sd_builds or sd_frees:
            problems.append('FltBuildDefaultSecurityDescriptor/FltFreeSecurityDescriptor called')
        h.check(not problems,
                'port secured by the driver\'s descriptor: SYSTEM and Administrators FLT_PORT_ALL_ACCESS, Authenticated Users FLT_PORT_CONNECT',
                'a self-relative DACL: SYSTEM, Administrators all access; Authenticated Users connect',
                '; '.join(problems))

    # 4. FltStartFiltering --------------------------------------------------------------
    starts = h.find('FltStartFiltering')
    if len(starts) != 1:
        h.check(False, '', 'FltStartFiltering called once', 'called %d times' % len(starts))
    else:
        s = starts[0]
        problems = []
        if s['args'][0] != H_FILTER:
            problems.append('with 0x%x instead of the filter 0x%x' % (s['args'][0], H_FILTER))
        if not create or s['seq'] < create[0]['seq']:
            problems.append('before the port was created')
        h.check(not problems, 'FltStartFiltering(filter) called after the port was created',
                'FltStartFiltering(0x%x) after FltCreateCommunicationPort' % H_FILTER, '; '.join(problems))

    setup = reg and reg['InstanceSetupCallback']
    unload = reg and reg['FilterUnloadCallback']
    callable_ok = de_ok and reg is not None

    # 5. InstanceSetup --------------------------------------------------------------------
    cases = [
        ('FAT volume', FILE_DEVICE_DISK_FILE_SYSTEM, FLT_FSTYPE_FAT, None, STATUS_FLT_DO_NOT_ATTACH),
        ('network volume', FILE_DEVICE_NETWORK_FILE_SYSTEM, FLT_FSTYPE_NTFS, None, STATUS_FLT_DO_NOT_ATTACH),
        ('NTFS without reparse points', FILE_DEVICE_DISK_FILE_SYSTEM, FLT_FSTYPE_NTFS,
         NTFS_ATTRIBUTES & ~FILE_SUPPORTS_REPARSE_POINTS, STATUS_FLT_DO_NOT_ATTACH),
        ('NTFS', FILE_DEVICE_DISK_FILE_SYSTEM, FLT_FSTYPE_NTFS, NTFS_ATTRIBUTES, STATUS_SUCCESS),
    ]
    cases = h.overrides.get('instance_cases', cases)
    for i, (label, devtype, fstype, attrs, want) in enumerate(cases):
        what = 'InstanceSetup(%s) returned %s' % (label, status_name(want))
        if not (callable_ok and h.is_code(setup or 0)):
            h.check(False, '', what, 'not run: DriverEntry or the registration failed')
            continue
        phase = 'InstanceSetup(%s)' % label
        volume, instance = H_VOLUME_BASE + i, H_INSTANCE_BASE + i
        objs = h.alloc(SIZEOF_FLT_RELATED_OBJECTS, 'FLT_RELATED_OBJECTS')
        rel = bytearray(SIZEOF_FLT_RELATED_OBJECTS)
        struct.pack_into('<H', rel, RELOBJ_SIZE, SIZEOF_FLT_RELATED_OBJECTS)
        struct.pack_into('<Q', rel, RELOBJ_FILTER, H_FILTER)
        struct.pack_into('<Q', rel, RELOBJ_VOLUME, volume)
        struct.pack_into('<Q', rel, RELOBJ_INSTANCE, instance)
        h.write(objs, rel)
        h.fs_attributes = attrs if attrs is not None else NTFS_ATTRIBUTES
        ret, err = h.call(phase, setup, [objs, FLTFL_INSTANCE_SETUP_AUTOMATIC_ATTACHMENT, devtype, fstype])
        calls = h.in_phase(phase)
        if err:
            h.check(False, '', what, h.describe_error(err))
            continue
        if ret != want:
            h.check(False, '', what, 'it returned %s (calls: %s)' % (
                status_name(ret), ', '.join(c['api'] for c in calls) or 'none'))
            continue
        new_ctx = [a for a, c in h.contexts.items() if c['phase'] == phase]
        if attrs is None:
            # Refused from the device and file-system type alone: nothing may be queried.
            h.check(not calls, what + ' without calling FltMgr', what + ' without calling FltMgr',
                    'it called %s' % ', '.join(c['api'] for c in calls))
        elif want != STATUS_SUCCESS:
            q = [c for c in calls if c['api'] == 'FltQueryVolumeInformation']
            problems = []
            if not q or q[0]['args'][0] != instance or q[0]['args'][4] & 0xFFFFFFFF != FileFsAttributeInformation:
                problems.append('no FltQueryVolumeInformation(instance, FileFsAttributeInformation)')
            leaked = [a for a in new_ctx if h.contexts[a]['refs'] > 0]
            if leaked:
                problems.append('context(s) %s allocated and not released' % ', '.join('0x%x' % a for a in leaked))
            h.check(not problems, what + ' after querying FileFsAttributeInformation, holding no context',
                    what + ' after FltQueryVolumeInformation(FileFsAttributeInformation), no context kept',
                    '; '.join(problems))
        else:
            problems = []
            q = [c for c in calls if c['api'] == 'FltQueryVolumeInformation']
            if not q or q[0]['args'][0] != instance or q[0]['args'][4] & 0xFFFFFFFF != FileFsAttributeInformation:
                problems.append('no FltQueryVolumeInformation(instance, FileFsAttributeInformation)')
            vp = [c for c in calls if c['api'] == 'FltGetVolumeProperties']
            if not vp or vp[0]['args'][0] != volume or vp[0]['ret'] != STATUS_SUCCESS:
                problems.append('no successful FltGetVolumeProperties(volume 0x%x)' % volume)
            sets = [c for c in calls if c['api'] == 'FltSetInstanceContext']
            if len(sets) != 1:
                problems.append('FltSetInstanceContext called %d times' % len(sets))
            else:
                s = sets[0]
                ctx = h.contexts.get(s['args'][2])
                if s['args'][0] != instance:
                    problems.append('context set on 0x%x, not the instance 0x%x' % (s['args'][0], instance))
                if ctx is None:
                    problems.append('context 0x%x did not come from FltAllocateContext' % s['args'][2])
                else:
                    if ctx['type'] != FLT_INSTANCE_CONTEXT:
                        problems.append('context type %d, not FLT_INSTANCE_CONTEXT' % ctx['type'])
                    reg_size = [c['size'] for c in reg['contexts'] if c['type'] == FLT_INSTANCE_CONTEXT]
                    if reg_size and ctx['size'] != reg_size[0]:
                        problems.append('allocated %d bytes, registered size %d' % (ctx['size'], reg_size[0]))
                    rel_calls = [c for c in calls if c['api'] == 'FltReleaseContext' and c['args'][0] == s['args'][2]]
                    if len(rel_calls) != 1 or rel_calls[0]['seq'] < s['seq']:
                        problems.append('FltReleaseContext on it %d time(s) after setting' % len(
                            [c for c in rel_calls if c['seq'] > s['seq']]))
                    if ctx['refs'] != 1:
                        problems.append('context reference count %d after setup (expected 1: FltMgr\'s)' % ctx['refs'])
            others = [a for a in new_ctx if not sets or a != sets[0]['args'][2]]
            if others:
                problems.append('extra contexts allocated: %s' % ', '.join('0x%x' % a for a in others))
            h.check(not problems,
                    what + ', read the volume properties, set an FLT_INSTANCE_CONTEXT from FltAllocateContext'
                    ' on the instance and released its own reference',
                    what + ' with FltSetInstanceContext(instance, allocated type-2 context) and FltReleaseContext',
                    '; '.join(problems))

    # 6. ConnectNotify / DisconnectNotify --------------------------------------------------
    def connect_body(name='mirror', version='1.0', root='\\Device\\HarddiskVolume1\\Cloud',
                     hydration=1, population=0, timeout_ms=0):
        # proto::connect body (48 bytes fixed): three byte lengths, hydration and
        # population bytes, the in-sync policy, the timeout, the provider id (16 bytes),
        # the connect flags, the hydration modifiers (u16), the management and hard-link
        # policies (a byte each), the notifications asked for (u32), 4 reserved, then the
        # three UTF-16LE strings.
        strings = [x.encode('utf-16-le') for x in (name, version, root)]
        fixed = struct.pack('<HHHBBII16sIHBBII', len(strings[0]), len(strings[1]), len(strings[2]),
                            hydration, population, 0, timeout_ms, bytes(range(16)), 0, 0, 0, 0,
                            0, 0)
        return fixed + b''.join(strings)

    def context_bytes(magic=CONNECT_MAGIC, version=1, header=CONNECT_HEADER_SIZE, flags=0, body=None):
        if body is None:
            body = connect_body()
        total = CONNECT_HEADER_SIZE + len(body)
        return magic + struct.pack('<HHII', version, header, total, flags) + body

    conn_cases = [
        ('valid context', context_bytes(), STATUS_SUCCESS),
        ('empty context', None, STATUS_INVALID_BUFFER_SIZE),
        ('bad magic', context_bytes(magic=b'XFLT'), STATUS_INVALID_PARAMETER),
        ('version 2', context_bytes(version=2), STATUS_REVISION_MISMATCH),
    ]
    conn_cases = h.overrides.get('connect_cases', conn_cases)
    cookie = None
    cookie_block = None
    for label, data, want in conn_cases:
        what = 'ConnectNotify(%s) returned %s' % (label, status_name(want))
        if not (callable_ok and port and h.is_code(port['connect'])):
            h.check(False, '', what, 'not run: DriverEntry or the port failed')
            continue
        phase = 'ConnectNotify(%s)' % label
        if data:
            buf = h.alloc(len(data), 'connection-context')
            h.write(buf, data)
        else:
            buf = 0
        out = h.alloc(8, 'connection-cookie')
        h.write(out, struct.pack('<Q', 0))
        ret, err = h.call(phase, port['connect'], [H_CLIENT_PORT, port['cookie'], buf, len(data or b''), out])
        if err:
            h.check(False, '', what, h.describe_error(err))
            continue
        written = h.u64(out)
        allocs = [a for a, b in h.pool.items() if b['phase'] == phase]
        if want == STATUS_SUCCESS:
            problems = []
            if ret != want:
                problems.append('it returned %s' % status_name(ret))
            if not written:
                problems.append('the connection cookie was left NULL')
            elif written not in h.pool:
                problems.append('cookie 0x%x is not a live pool block' % written)
            else:
                cookie, cookie_block = written, h.pool[written]
            h.check(not problems, what + ' and a connection cookie (pool %r, %d bytes)' % (
                tag_str(cookie_block['tag']), cookie_block['size']) if cookie_block else what,
                what + ' with a non-NULL cookie', '; '.join(problems))
        else:
            problems = []
            if ret != want:
                problems.append('it returned %s' % status_name(ret))
            if allocs:
                problems.append('it kept %d pool block(s)' % len(allocs))
            h.check(not problems, what, what + ', keeping nothing', '; '.join(problems))

    what = 'DisconnectNotify(cookie) closed the client port, then freed the connection with its tag'
    if cookie is None:
        h.check(False, '', what, 'not run: no connection was accepted')
    else:
        phase = 'DisconnectNotify'
        ret, err = h.call(phase, port['disconnect'], [cookie])
        calls = h.in_phase(phase)
        if err:
            h.check(False, '', what, h.describe_error(err))
        else:
            problems = []
            close = [c for c in calls if c['api'] == 'FltCloseClientPort']
            free = [c for c in calls if c['api'] == 'ExFreePoolWithTag' and c['args'][0] == cookie]
            if len(close) != 1:
                problems.append('FltCloseClientPort called %d times' % len(close))
            else:
                if close[0]['args'][0] != H_FILTER:
                    problems.append('FltCloseClientPort Filter 0x%x' % close[0]['args'][0])
                if close[0].get('client_port') != H_CLIENT_PORT:
                    problems.append('closed client port 0x%x, not 0x%x' % (close[0].get('client_port') or 0, H_CLIENT_PORT))
            if len(free) != 1:
                problems.append('the connection was freed %d times' % len(free))
            else:
                if free[0]['args'][1] & 0xFFFFFFFF != cookie_block['tag']:
                    problems.append('freed with tag %r, allocated with %r' % (
                        tag_str(free[0]['args'][1]), tag_str(cookie_block['tag'])))
                if close and free[0]['seq'] < close[0]['seq']:
                    problems.append('freed before the client port was closed')
            h.check(not problems, what, what, '; '.join(problems))

    # 7. MessageNotify on a management connection ----------------------------------------------
    # A management client connects, then sends ClearImageRules three times: with a good reply
    # buffer, with one MmSecureVirtualMemory refuses (freed or protected by another thread of
    # the provider), and with one too small for any reply.
    mgr_cookie = None
    what = 'ConnectNotify(management context) returned STATUS_SUCCESS and a non-pool cookie'
    if not (callable_ok and port and h.is_code(port['connect'])):
        h.check(False, '', what, 'not run: DriverEntry or the port failed')
    else:
        data = context_bytes(flags=CONNECT_FLAG_MANAGEMENT, body=b'')
        buf = h.alloc(len(data), 'management-context')
        h.write(buf, data)
        out = h.alloc(8, 'management-cookie')
        ret, err = h.call('ConnectNotify(management)', port['connect'],
                          [H_MANAGER_PORT, port['cookie'], buf, len(data), out])
        written = h.u64(out)
        if err:
            h.check(False, '', what, h.describe_error(err))
        elif ret != STATUS_SUCCESS or not written or written in h.pool:
            h.check(False, '', what, 'it returned %s, cookie 0x%x' % (status_name(ret), written))
        else:
            mgr_cookie = written
            h.check(True, what)

    def clear_rules(request_id):
        return struct.pack('<HHIQ', KIND_CLEAR_IMAGE_RULES, PROTOCOL_VERSION, 24, request_id) + b'\0' * 8

    msg_cases = [
        # label, output length, MmSecureVirtualMemory refuses, expected status
        ('good reply buffer', 0x100, False, STATUS_SUCCESS),
        ('reply buffer gone bad', 0x100, True, STATUS_INVALID_USER_BUFFER),
        ('reply buffer too small', REPLY_HEADER_SIZE - 1, False, STATUS_BUFFER_TOO_SMALL),
    ]
    for i, (label, out_len, refuse, want) in enumerate(msg_cases):
        what = 'MessageNotify(ClearImageRules, %s) returned %s' % (label, status_name(want))
        if mgr_cookie is None:
            h.check(False, '', what, 'not run: no management connection')
            continue
        phase = 'MessageNotify(%s)' % label
        request_id = 0x5150 + i
        msg = clear_rules(request_id)
        inp = h.alloc(len(msg), 'message-input')
        h.write(inp, msg)
        out = h.alloc(out_len, 'message-output')
        h.write(out, b'\xAB' * out_len)      # what the provider's buffer held
        pret = h.alloc(4, 'returned-length')
        h.write(pret, struct.pack('<I', 0xFFFFFFFF))
        h.secure_refuses = refuse
        ret, err = h.call(phase, port['message'], [mgr_cookie, inp, len(msg), out, out_len, pret])
        h.secure_refuses = False
        calls = h.in_phase(phase)
        if err:
            h.check(False, '', what, h.describe_error(err))
            continue
        problems = []
        if ret != want:
            problems.append('it returned %s' % status_name(ret))
        # The input is read by the image's own exception-guarded copy (cloudflt_seh_copy,
        # emulated as code, no import): no kernel copy routine may be asked for it.
        copies = [c for c in calls if c['api'] == 'MmCopyMemory']
        if copies:
            problems.append('input copied with MmCopyMemory, not the guarded copy')
        secures = [c for c in calls if c['api'] == 'MmSecureVirtualMemory']
        unsecures = [c for c in calls if c['api'] == 'MmUnsecureVirtualMemory']
        returned = h.u32(pret)
        after = h.read(out, out_len)
        if want == STATUS_BUFFER_TOO_SMALL:
            if secures:
                problems.append('MmSecureVirtualMemory called for a buffer no reply fits in')
        elif len(secures) != 1:
            problems.append('MmSecureVirtualMemory called %d times' % len(secures))
        else:
            s = secures[0]
            if s['args'][0] != out or s['args'][1] != out_len or s['args'][2] & 0xFFFFFFFF != PAGE_READWRITE:
                problems.append('MmSecureVirtualMemory(0x%x, %d, 0x%x), not (output 0x%x, %d, PAGE_READWRITE)'
                                % (s['args'][0], s['args'][1], s['args'][2], out, out_len))
            if copies and s['seq'] < copies[0]['seq']:
                problems.append('the output was secured before the input was copied')
        if want == STATUS_SUCCESS:
            entry = h.secures.get(secures[0]['ret']) if len(secures) == 1 else None
            if len(unsecures) != 1 or entry is None or unsecures[0]['args'][0] != secures[0]['ret']:
                problems.append('MmUnsecureVirtualMemory called %d times, not once with the secure handle'
                                % len(unsecures))
            elif entry['bytes_at_unsecure'] != after:
                problems.append('the output changed after MmUnsecureVirtualMemory')
            version, _, status, rid, plen, _ = struct.unpack_from('<HHiQII', after)
            if returned != REPLY_HEADER_SIZE:
                problems.append('ReturnOutputBufferLength %d, not %d' % (returned, REPLY_HEADER_SIZE))
            if (version, status, rid, plen) != (PROTOCOL_VERSION, 0, request_id, 0):
                problems.append('reply version %d status 0x%x request id 0x%x payload %d'
                                % (version, status & 0xFFFFFFFF, rid, plen))
            if after[REPLY_HEADER_SIZE:] != b'\xAB' * (out_len - REPLY_HEADER_SIZE):
                problems.append('bytes past the reply were written')
        else:
            if unsecures:
                problems.append('MmUnsecureVirtualMemory called without a secure')
            if after != b'\xAB' * out_len:
                problems.append('the output buffer was written')
            if returned != 0:
                problems.append('ReturnOutputBufferLength %d, not 0' % returned)
        if want == STATUS_SUCCESS:
            ok_text = what + ': input read by the guarded copy, output secured (PAGE_READWRITE), ' \
                'reply written, then unsecured'
        elif refuse:
            ok_text = what + ' without writing the output or unsecuring anything'
        else:
            ok_text = what + ' without securing or writing the output'
        h.check(not problems, ok_text, what, '; '.join(problems))

    what = 'DisconnectNotify(management cookie) closed its client port'
    if mgr_cookie is None:
        h.check(False, '', what, 'not run: no management connection')
    else:
        phase = 'DisconnectNotify(management)'
        ret, err = h.call(phase, port['disconnect'], [mgr_cookie])
        close = [c for c in h.in_phase(phase) if c['api'] == 'FltCloseClientPort']
        if err:
            h.check(False, '', what, h.describe_error(err))
        else:
            h.check(len(close) == 1 and close[0].get('client_port') == H_MANAGER_PORT, what, what,
                    'FltCloseClientPort calls: %s' % ['0x%x' % (c.get('client_port') or 0) for c in close])

    # 8. FilterUnload ------------------------------------------------------------------------
    what = 'FilterUnload(0) returned STATUS_SUCCESS'
    if not (callable_ok and h.is_code(unload or 0)):
        h.check(False, '', what, 'not run: DriverEntry or the registration failed')
    else:
        phase = 'FilterUnload'
        ret, err = h.call(phase, unload, [0])
        calls = h.in_phase(phase)
        if err:
            h.check(False, '', what, h.describe_error(err))
        else:
            h.check(ret == STATUS_SUCCESS, what, what, 'it returned %s' % status_name(ret))
            close = [c for c in calls if c['api'] == 'FltCloseCommunicationPort']
            unreg = [c for c in calls if c['api'] == 'FltUnregisterFilter']
            problems = []
            if len(close) != 1 or close[0]['args'][0] != H_SERVER_PORT:
                problems.append('FltCloseCommunicationPort calls: %s' % ['0x%x' % c['args'][0] for c in close])
            if len(unreg) != 1 or unreg[0]['args'][0] != H_FILTER:
                problems.append('FltUnregisterFilter calls: %s' % ['0x%x' % c['args'][0] for c in unreg])
            if close and unreg and close[0]['seq'] > unreg[0]['seq']:
                problems.append('the port was closed after the filter was unregistered')
            # After FltUnregisterFilter the driver may only free what it owns: pool, and
            # the spin lock of a table of its own it empties (the registered sync roots).
            own = ('ExFreePoolWithTag', 'KeAcquireInStackQueuedSpinLock',
                   'KeReleaseInStackQueuedSpinLock')
            late = [c for c in calls if unreg and c['seq'] > unreg[0]['seq'] and c['api'] not in own]
            if late:
                problems.append('calls after FltUnregisterFilter: %s' % ', '.join(c['api'] for c in late))
            h.check(not problems, 'FltCloseCommunicationPort(server port) before FltUnregisterFilter(filter)',
                    'FltCloseCommunicationPort(0x%x) then FltUnregisterFilter(0x%x)' % (H_SERVER_PORT, H_FILTER),
                    '; '.join(problems))

    n_allocs = len(h.pool) + len(h.pool_freed)
    leaked = ['0x%x %r %d bytes from %s' % (a, tag_str(b['tag']), b['size'], b['phase']) for a, b in h.pool.items()]
    leaked += ['generic work item 0x%x from %s' % (a, phase) for a, phase in h.work_items.items()]
    leaked += ['timer 0x%x still queued' % t for t, queued in h.timers.items() if queued]
    leaked += ['user range 0x%x (%d bytes) secured in %s, never unsecured' % (e['addr'], e['size'], e['phase'])
               for e in h.secures.values() if e['live']]
    problems = (['leaked: ' + ', '.join(leaked)] if leaked else []) + h.pool_errors + h.secure_errors
    h.check(not problems,
            'all %d ExAllocatePool2 block(s) freed with their own tag, none overrun' % n_allocs,
            'every ExAllocatePool2 block freed once with its own tag', '; '.join(problems))
    # Registry keys, files and tokens the driver opened are closed and released.
    lookups = [c.get('routine') for c in h.find('MmGetSystemRoutineAddress')]
    left = ['key %s' % k for k in h.key_handles.values()] + \
           ['file %s' % p for p, _ in h.file_handles.values()]
    if h.token_refs:
        left.append('%d token reference(s)' % h.token_refs)
    h.check(not left and 'ZwCreateKey' in lookups,
            'the sync-root store was opened through MmGetSystemRoutineAddress and every key, '
            'file and token handle was closed (%d registry value(s) written)'
            % sum(len(v) for v in h.registry.values()),
            'ZwCreateKey looked up; every handle closed', ', '.join(left) or 'ZwCreateKey never looked up')
    h.check(not h.unexpected and not h.hook_errors,
            'no unexpected API called (%d calls, all modelled)' % len(h.calls),
            'only modelled APIs called',
            '; '.join(['%s called %s' % (p, a) for p, a in h.unexpected] +
                      ['model of %s raised during %s' % (a, p) for p, a, _ in h.hook_errors]))


def main(argv):
    if len(argv) != 2 or not os.path.isfile(argv[1]):
        print('usage: python harness.py PATH_TO_cloudflt.sys', file=sys.stderr)
        return 2
    h = None
    try:
        h = Harness(argv[1])
        run_checks(h)
    except Exception:
        results = h.results if h else []
        results.append((False, 'FAIL the harness runs to completion / it raised:\n%s' % indent(traceback.format_exc())))
        if h is None:
            h = type('H', (), {'results': results})()
    for _, line in h.results:
        print(line)
    passed = sum(1 for ok, _ in h.results if ok)
    failed = len(h.results) - passed
    print('emulation: %d passed, %d failed' % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
