#!/usr/bin/env python3
"""DLPack hand-off between dotcompute-memory and a real consumer and producer: NumPy.

Loads the dlpack-harness library (path in DLPACK_HARNESS) with ctypes, wraps its exports in
capsules the way the Python DLPack protocol says (capsule names "dltensor_versioned" and
"dltensor"; a consumer renames a consumed capsule "used_dltensor_versioned"/"used_dltensor"),
and checks, through numpy.from_dlpack and ndarray.__dlpack__:

- export -> np.from_dlpack: values, dtype, read-only for Access::Read, and the deleter running
  once (live buffers back to zero) when the array goes away; a zero-length export; the legacy
  path (a producer whose __dlpack__ takes no max_version gets a "dltensor" capsule); a capsule
  nobody consumed;
- NumPy array -> our buffer: values, no copy (a write through our buffer shows in the array),
  NumPy's deleter running when our buffer drops (the array's reference is given back, the
  capsule stays valid), nothing leaking; legacy capsules too;
- the bad inputs NumPy can produce (a[::2], a.T, a wrong dtype, a read-only array): our error,
  and the capsule not consumed (NumPy's own destructor gives its reference back);
- torch.from_dlpack the same way where torch is importable.

Prints one line per check and a closing "N passed, M failed"; exits 1 on any failure.
"""
import ctypes
import gc
import os
import sys
import traceback
import weakref

import numpy as np

# ---- the harness ----------------------------------------------------------------------------

LIB = ctypes.CDLL(os.environ["DLPACK_HARNESS"])
LIB.dlh_manager_new.restype = ctypes.c_void_p
LIB.dlh_manager_free.argtypes = [ctypes.c_void_p]
LIB.dlh_live_buffers.argtypes = [ctypes.c_void_p]
LIB.dlh_live_buffers.restype = ctypes.c_uint64
LIB.dlh_deleter_runs.restype = ctypes.c_uint64
LIB.dlh_export.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_double, ctypes.c_double,
                           ctypes.c_int32, ctypes.c_int32, ctypes.c_char_p, ctypes.c_size_t]
LIB.dlh_export.restype = ctypes.c_void_p
LIB.dlh_call_deleter_versioned.argtypes = [ctypes.c_void_p]
LIB.dlh_call_deleter_legacy.argtypes = [ctypes.c_void_p]
LIB.dlh_import.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_size_t]
LIB.dlh_import.restype = ctypes.c_void_p
LIB.dlh_imported_len.argtypes = [ctypes.c_void_p]
LIB.dlh_imported_len.restype = ctypes.c_size_t
LIB.dlh_imported_values.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_double), ctypes.c_size_t]
LIB.dlh_imported_values.restype = ctypes.c_size_t
LIB.dlh_imported_scale.argtypes = [ctypes.c_void_p, ctypes.c_double]
LIB.dlh_imported_scale.restype = ctypes.c_int32
LIB.dlh_imported_free.argtypes = [ctypes.c_void_p]

READ, READ_WRITE, OVERWRITE = 0, 1, 2
KDL_CPU = 1

# ---- capsules (the C API through ctypes.pythonapi) ------------------------------------------

# Capsules keep a pointer to their name, so the names live as long as the module.
NAME_VERSIONED = b"dltensor_versioned"
NAME_LEGACY = b"dltensor"
USED_VERSIONED = b"used_dltensor_versioned"
USED_LEGACY = b"used_dltensor"

DESTRUCTOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
API = ctypes.pythonapi
API.PyCapsule_New.restype = ctypes.py_object
API.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, DESTRUCTOR]
API.PyCapsule_GetPointer.restype = ctypes.c_void_p
API.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
API.PyCapsule_SetName.restype = ctypes.c_int
API.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
API.PyCapsule_IsValid.restype = ctypes.c_int
API.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
# In a destructor the capsule is being freed: it is passed as a plain pointer, never as an
# object (which would take a reference to it).
IS_VALID_RAW = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(("PyCapsule_IsValid", API))
GET_POINTER_RAW = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(("PyCapsule_GetPointer", API))


def _destroy_capsule(capsule):
    """A capsule nobody consumed still owns its tensor: run the tensor's deleter."""
    if IS_VALID_RAW(capsule, NAME_VERSIONED):
        LIB.dlh_call_deleter_versioned(GET_POINTER_RAW(capsule, NAME_VERSIONED))
    elif IS_VALID_RAW(capsule, NAME_LEGACY):
        LIB.dlh_call_deleter_legacy(GET_POINTER_RAW(capsule, NAME_LEGACY))


CAPSULE_DESTRUCTOR = DESTRUCTOR(_destroy_capsule)


def capsule_name(capsule):
    for name in (NAME_VERSIONED, NAME_LEGACY, USED_VERSIONED, USED_LEGACY):
        if API.PyCapsule_IsValid(capsule, name):
            return name.decode()
    return None


# ---- our side: a producer object and the import ----------------------------------------------

TYPES = {"f32": np.float32, "f64": np.float64, "i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64,
         "u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "u64": np.uint64}


class Exported:
    """A producer: each __dlpack__ call exports a fresh buffer of `len` values start + i*step."""

    def __init__(self, mm, dtype="f32", length=8, start=1.0, step=0.5, access=READ):
        self.mm, self.dtype, self.length, self.start, self.step, self.access = mm, dtype, length, start, step, access

    def expected(self):
        return (self.start + np.arange(self.length) * self.step).astype(TYPES[self.dtype])

    def __dlpack_device__(self):
        return (KDL_CPU, 0)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        if stream not in (None, -1):
            raise BufferError(f"stream {stream!r}: host memory takes no stream (pass None)")
        if dl_device not in (None, (KDL_CPU, 0)):
            raise BufferError(f"dl_device {dl_device!r}: this producer exports host memory (1, 0) only")
        if copy:
            raise BufferError("copy=True: this producer exports its memory without copying")
        versioned = max_version is not None and max_version[0] >= 1
        err = ctypes.create_string_buffer(1024)
        ptr = LIB.dlh_export(self.mm, self.dtype.encode(), self.length, self.start, self.step, self.access,
                             int(versioned), err, len(err))
        if not ptr:
            raise BufferError(err.value.decode())
        return API.PyCapsule_New(ptr, NAME_VERSIONED if versioned else NAME_LEGACY, CAPSULE_DESTRUCTOR)


class LegacyOnly(Exported):
    """A producer of the older protocol: __dlpack__(stream) only, so consumers fall back to the
    legacy struct (NumPy retries without keywords when its call raises TypeError)."""

    def __dlpack__(self, stream=None):
        return super().__dlpack__(stream=stream)


class ImportError_(Exception):
    """Our import refused the tensor; the message is the library's error."""


def import_capsule(mm, capsule, dtype):
    """Wraps the tensor in `capsule` (NumPy's) as one of our buffers; renames the capsule
    consumed on success. Returns the handle."""
    versioned = capsule_name(capsule) == "dltensor_versioned"
    name = NAME_VERSIONED if versioned else NAME_LEGACY
    ptr = API.PyCapsule_GetPointer(capsule, name)
    err = ctypes.create_string_buffer(2048)
    handle = LIB.dlh_import(mm, ptr, int(versioned), dtype.encode(), err, len(err))
    if not handle:
        raise ImportError_(err.value.decode())
    assert API.PyCapsule_SetName(capsule, USED_VERSIONED if versioned else USED_LEGACY) == 0
    return handle


def imported_values(handle):
    n = LIB.dlh_imported_len(handle)
    out = (ctypes.c_double * max(n, 1))()
    got = LIB.dlh_imported_values(handle, out, n)
    assert got == n, f"read {got} of {n} values"
    return np.array(out[:n])


# ---- the checks ---------------------------------------------------------------------------------

def collect():
    gc.collect()


def check_export_read(mm):
    runs = LIB.dlh_deleter_runs()
    producer = Exported(mm, "f32", 8, 1.0, 0.5, READ)
    arr = np.from_dlpack(producer)
    assert arr.dtype == np.float32 and arr.shape == (8,), (arr.dtype, arr.shape)
    np.testing.assert_array_equal(arr, producer.expected())
    assert not arr.flags.writeable, "Access::Read must reach NumPy as a read-only array"
    assert LIB.dlh_live_buffers(mm) == 1
    assert LIB.dlh_deleter_runs() == runs, "the deleter must not run while NumPy holds the array"
    view = arr[2:5]
    del arr
    collect()
    assert LIB.dlh_deleter_runs() == runs, "a view keeps the export alive"
    np.testing.assert_array_equal(view, producer.expected()[2:5])
    del view
    collect()
    assert LIB.dlh_deleter_runs() == runs + 1, "the deleter runs once when NumPy is done"
    assert LIB.dlh_live_buffers(mm) == 0


def check_export_read_write_and_dtypes(mm):
    for dtype in TYPES:
        runs = LIB.dlh_deleter_runs()
        producer = Exported(mm, dtype, 5, 3.0, 2.0, READ_WRITE)
        arr = np.from_dlpack(producer)
        assert arr.dtype == TYPES[dtype], (dtype, arr.dtype)
        np.testing.assert_array_equal(arr, producer.expected())
        assert arr.flags.writeable, f"{dtype}: ReadWrite exports are writable"
        arr[0] = 42  # the consumer writes our memory
        assert arr[0] == 42
        del arr
        collect()
        assert LIB.dlh_deleter_runs() == runs + 1, dtype
    assert LIB.dlh_live_buffers(mm) == 0


def check_zero_length_export(mm):
    runs = LIB.dlh_deleter_runs()
    arr = np.from_dlpack(Exported(mm, "f64", 0))
    assert arr.shape == (0,) and arr.dtype == np.float64
    assert arr.sum() == 0
    del arr
    collect()
    assert LIB.dlh_deleter_runs() == runs + 1
    assert LIB.dlh_live_buffers(mm) == 0


def check_legacy_export(mm):
    producer = LegacyOnly(mm, "i32", 6, -3.0, 1.0, READ_WRITE)
    capsule = producer.__dlpack__()
    assert capsule_name(capsule) == "dltensor", capsule_name(capsule)
    del capsule  # nobody consumed it: its destructor runs the deleter
    collect()
    assert LIB.dlh_live_buffers(mm) == 0
    runs = LIB.dlh_deleter_runs()
    arr = np.from_dlpack(producer)  # NumPy falls back to __dlpack__() without max_version
    np.testing.assert_array_equal(arr, producer.expected())
    del arr
    collect()
    assert LIB.dlh_deleter_runs() == runs + 1
    assert LIB.dlh_live_buffers(mm) == 0
    # Our legacy export refuses Access::Read: the legacy struct cannot say read-only.
    try:
        np.from_dlpack(LegacyOnly(mm, "f32", 3, 0.0, 1.0, READ))
    except BufferError as e:
        assert "read-only flag" in str(e), e
    else:
        raise AssertionError("a legacy Read export was not refused")
    assert LIB.dlh_live_buffers(mm) == 0


def check_unconsumed_capsule(mm):
    runs = LIB.dlh_deleter_runs()
    capsule = Exported(mm, "u8", 4).__dlpack__(max_version=(1, 0))
    assert capsule_name(capsule) == "dltensor_versioned"
    assert LIB.dlh_live_buffers(mm) == 1
    del capsule
    collect()
    assert LIB.dlh_deleter_runs() == runs + 1
    assert LIB.dlh_live_buffers(mm) == 0


def check_import(mm):
    for max_version in ((1, 0), None):
        base = np.arange(10, dtype=np.float64) * 1.5
        refs = sys.getrefcount(base)
        capsule = base.__dlpack__(max_version=max_version) if max_version else base.__dlpack__()
        expected_name = "dltensor_versioned" if max_version else "dltensor"
        assert capsule_name(capsule) == expected_name
        assert sys.getrefcount(base) == refs + 1, "NumPy's tensor holds a reference to the array"
        handle = import_capsule(mm, capsule, "f64")
        assert capsule_name(capsule) == "used_" + expected_name, "consumed capsules are renamed"
        assert LIB.dlh_live_buffers(mm) == 1
        np.testing.assert_array_equal(imported_values(handle), np.arange(10) * 1.5)
        # No copy: a write through our buffer is a write to NumPy's array.
        assert LIB.dlh_imported_scale(handle, 2.0) == 0
        np.testing.assert_array_equal(base, np.arange(10) * 3.0)
        LIB.dlh_imported_free(handle)
        collect()
        assert sys.getrefcount(base) == refs, "dropping our buffer ran NumPy's deleter (reference given back)"
        assert capsule_name(capsule) == "used_" + expected_name, "the capsule stays valid"
        del capsule
        collect()
        assert sys.getrefcount(base) == refs, "a consumed capsule's destructor does nothing"
        np.testing.assert_array_equal(base, np.arange(10) * 3.0)  # the array is intact
        assert LIB.dlh_live_buffers(mm) == 0


def check_import_keeps_the_array_alive(mm):
    arr = np.full(1000, 7, dtype=np.int32)
    alive = weakref.ref(arr)
    handle = import_capsule(mm, arr.__dlpack__(max_version=(1, 0)), "i32")
    del arr
    collect()
    assert alive() is not None, "our buffer keeps NumPy's array alive"
    assert imported_values(handle).sum() == 7000
    LIB.dlh_imported_free(handle)
    collect()
    assert alive() is None, "NumPy's deleter ran: nothing else held the array"
    assert LIB.dlh_live_buffers(mm) == 0


def check_import_flattens_compact_arrays(mm):
    grid = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    handle = import_capsule(mm, grid.__dlpack__(max_version=(1, 0)), "u16")
    np.testing.assert_array_equal(imported_values(handle), grid.ravel())
    LIB.dlh_imported_free(handle)
    # An empty array: nothing to read, and NumPy's deleter still runs once.
    empty = np.zeros((0, 3), dtype=np.float32)
    refs = sys.getrefcount(empty)
    handle = import_capsule(mm, empty.__dlpack__(max_version=(1, 0)), "f32")
    assert LIB.dlh_imported_len(handle) == 0
    LIB.dlh_imported_free(handle)
    collect()
    assert sys.getrefcount(empty) == refs
    assert LIB.dlh_live_buffers(mm) == 0


def refused(mm, array, dtype, *needles):
    """Imports `array` as `dtype`, which must fail with our error holding `needles`, and leave
    the capsule unconsumed (its destructor gives NumPy's reference back)."""
    refs = sys.getrefcount(array)
    capsule = array.__dlpack__(max_version=(1, 0))
    try:
        import_capsule(mm, capsule, dtype)
    except ImportError_ as e:
        message = str(e)
    else:
        raise AssertionError(f"importing {array.dtype} {array.shape} {array.strides} as {dtype} succeeded")
    for needle in needles:
        assert needle in message, f"{message!r} lacks {needle!r}"
    assert "not consumed" in message, message
    assert capsule_name(capsule) == "dltensor_versioned", "a refused capsule is not renamed"
    del capsule
    collect()
    assert sys.getrefcount(array) == refs, "NumPy's own destructor released the unconsumed tensor"
    assert LIB.dlh_live_buffers(mm) == 0
    return message


def check_bad_imports(mm):
    a = np.arange(12, dtype=np.float32)
    refused(mm, a[::2], "f32", "strides", "[2] for shape [6]", "gaps")
    refused(mm, a.reshape(3, 4).T, "f32", "strides", "not in row-major order")
    refused(mm, a, "f64", "dtype", "kDLFloat 32", "kDLFloat 64", "f64")
    refused(mm, np.arange(4, dtype=np.int64), "i32", "kDLInt 64", "kDLInt 32")
    frozen = np.arange(4, dtype=np.float32)
    frozen.setflags(write=False)
    refused(mm, frozen, "f32", "READ_ONLY")


def check_torch(mm):
    try:
        import torch
    except ImportError:
        print("torch not installed: skipping the PyTorch hand-off")
        return
    runs = LIB.dlh_deleter_runs()
    producer = Exported(mm, "f32", 6, 0.0, 0.25, READ_WRITE)
    t = torch.from_dlpack(producer)
    assert t.dtype == torch.float32 and tuple(t.shape) == (6,)
    np.testing.assert_array_equal(t.numpy(), producer.expected())
    del t
    collect()
    assert LIB.dlh_deleter_runs() == runs + 1
    source = torch.arange(5, dtype=torch.float64)
    handle = import_capsule(mm, source.__dlpack__(), "f64")
    np.testing.assert_array_equal(imported_values(handle), np.arange(5, dtype=np.float64))
    LIB.dlh_imported_free(handle)
    assert LIB.dlh_live_buffers(mm) == 0


CHECKS = [
    check_export_read,
    check_export_read_write_and_dtypes,
    check_zero_length_export,
    check_legacy_export,
    check_unconsumed_capsule,
    check_import,
    check_import_keeps_the_array_alive,
    check_import_flattens_compact_arrays,
    check_bad_imports,
    check_torch,
]


def main():
    print(f"numpy {np.__version__}, harness {os.environ['DLPACK_HARNESS']}")
    mm = LIB.dlh_manager_new()
    assert mm, "no cpu manager"
    passed = failed = 0
    for check in CHECKS:
        try:
            check(mm)
        except Exception:
            failed += 1
            print(f"FAIL {check.__name__}")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {check.__name__}")
    if LIB.dlh_live_buffers(mm) != 0:
        failed += 1
        print(f"FAIL {LIB.dlh_live_buffers(mm)} buffers still alive at the end")
    LIB.dlh_manager_free(mm)
    print(f"dlpack: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
