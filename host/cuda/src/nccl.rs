//! The few NCCL calls the ranks make, loaded at run time like the other CUDA libraries. NCCL
//! ships as `libnccl.so.2` (the PyTorch wheels' `nvidia/nccl/lib`, the distributions' runtime
//! package), a name cudarc's loader does not try, so the library is opened here;
//! `MLAHOST_NCCL_LIB` names another file.

use crate::{CudaError, Result};
use libloading::Library;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

/// NCCL's opaque group id (`ncclUniqueId`): made by one rank, handed to the others.
pub const UNIQUE_ID_BYTES: usize = 128;

type Comm = *mut c_void;
const NCCL_SUCCESS: c_int = 0;
const NCCL_FLOAT32: c_int = 7;
const NCCL_SUM: c_int = 0;

#[repr(C)]
#[derive(Clone, Copy)]
struct UniqueId {
    internal: [c_char; UNIQUE_ID_BYTES],
}

struct Api {
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> c_int,
    comm_init_rank: unsafe extern "C" fn(*mut Comm, c_int, UniqueId, c_int) -> c_int,
    comm_destroy: unsafe extern "C" fn(Comm) -> c_int,
    all_reduce: unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, Comm, *mut c_void) -> c_int,
    all_gather: unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, Comm, *mut c_void) -> c_int,
    reduce_scatter: unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, Comm, *mut c_void) -> c_int,
    error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    /// Keeps the functions above loaded.
    _lib: Library,
}

fn api() -> Result<&'static Api> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(|e| CudaError::Unavailable(e.clone()))
}

fn load() -> std::result::Result<Api, String> {
    let names: Vec<String> = match std::env::var("MLAHOST_NCCL_LIB") {
        Ok(path) => vec![path],
        Err(_) => vec!["libnccl.so.2".into(), "libnccl.so".into()],
    };
    // SAFETY: loading NCCL runs its initialisers, which have no preconditions.
    let lib = names
        .iter()
        .find_map(|n| unsafe { Library::new(n) }.ok())
        .ok_or_else(|| format!("NCCL is not installed (tried {names:?} on the library path; set MLAHOST_NCCL_LIB to its file)"))?;
    // SAFETY: each symbol is NCCL's C function of exactly this signature (nccl.h, ABI 2.x).
    unsafe {
        let sym = |name: &str| -> std::result::Result<*const c_void, String> {
            lib.get::<*const c_void>(name.as_bytes()).map(|s| *s).map_err(|e| format!("NCCL has no {name}: {e}"))
        };
        Ok(Api {
            get_unique_id: std::mem::transmute::<*const c_void, _>(sym("ncclGetUniqueId")?),
            comm_init_rank: std::mem::transmute::<*const c_void, _>(sym("ncclCommInitRank")?),
            comm_destroy: std::mem::transmute::<*const c_void, _>(sym("ncclCommDestroy")?),
            all_reduce: std::mem::transmute::<*const c_void, _>(sym("ncclAllReduce")?),
            all_gather: std::mem::transmute::<*const c_void, _>(sym("ncclAllGather")?),
            reduce_scatter: std::mem::transmute::<*const c_void, _>(sym("ncclReduceScatter")?),
            error_string: std::mem::transmute::<*const c_void, _>(sym("ncclGetErrorString")?),
            _lib: lib,
        })
    }
}

fn check(api: &Api, what: &str, code: c_int) -> Result<()> {
    if code == NCCL_SUCCESS {
        return Ok(());
    }
    // SAFETY: NCCL returns a static string for every result code.
    let message = unsafe { CStr::from_ptr((api.error_string)(code)) }.to_string_lossy().into_owned();
    Err(CudaError::Nccl { context: what.into(), message })
}

/// A new group id (rank 0 makes it; the others receive it, e.g. through `rendezvous`).
pub fn unique_id() -> Result<Vec<u8>> {
    let api = api()?;
    let mut id = UniqueId { internal: [0; UNIQUE_ID_BYTES] };
    // SAFETY: `id` is a valid, writable ncclUniqueId.
    check(api, "ncclGetUniqueId", unsafe { (api.get_unique_id)(&mut id) })?;
    Ok(id.internal.iter().map(|&c| c as u8).collect())
}

/// One rank's NCCL communicator, bound to the device current when it was made.
pub struct NcclComm {
    comm: Comm,
}

// SAFETY: an NCCL communicator may be used from any thread, one call at a time (`&self` calls
// are made by the rank's single thread; Drop runs after its last use).
unsafe impl Send for NcclComm {}
// SAFETY: as above.
unsafe impl Sync for NcclComm {}

impl NcclComm {
    /// Joins group `id` as `rank` of `world`; blocks until every rank has joined. The caller's
    /// CUDA context must be current (the rank's GPU).
    pub fn join(id: &[u8], rank: usize, world: usize) -> Result<Self> {
        let api = api()?;
        let mut uid = UniqueId { internal: [0; UNIQUE_ID_BYTES] };
        if id.len() != UNIQUE_ID_BYTES {
            return Err(CudaError::Unavailable(format!("an NCCL group id has {UNIQUE_ID_BYTES} bytes, not {}", id.len())));
        }
        uid.internal.iter_mut().zip(id).for_each(|(d, &s)| *d = s as c_char);
        let mut comm: Comm = std::ptr::null_mut();
        // SAFETY: `comm` is writable; rank < world is checked by NCCL, which then returns an error.
        check(api, "ncclCommInitRank", unsafe { (api.comm_init_rank)(&mut comm, world as c_int, uid, rank as c_int) })?;
        Ok(Self { comm })
    }

    /// `count` f32 at `ptr` summed over the group in place, queued on `stream` (capturable).
    pub fn all_reduce_sum_f32(&self, ptr: u64, count: usize, stream: *mut c_void) -> Result<()> {
        let api = api()?;
        let p = ptr as *mut c_void;
        // SAFETY: `ptr` is a live device allocation of at least `count` f32 on this rank's GPU,
        // and `stream` is that GPU's live stream.
        check(api, "ncclAllReduce", unsafe { (api.all_reduce)(p, p, count, NCCL_FLOAT32, NCCL_SUM, self.comm, stream) })
    }
}

impl NcclComm {
    /// In place: `ptr` holds `world` slots of `count` f32, this rank's at slot `rank`; every
    /// slot is filled with its rank's, on every rank (queued on `stream`, capturable).
    pub fn all_gather_f32(&self, ptr: u64, count: usize, rank: usize, stream: *mut c_void) -> Result<()> {
        let api = api()?;
        let send = (ptr + (rank * count * 4) as u64) as *const c_void;
        // SAFETY: `ptr` is a live device allocation of `world * count` f32 on this rank's GPU
        // (the caller's bounds check), the send slot lies inside it (NCCL's in-place form), and
        // `stream` is that GPU's live stream.
        check(api, "ncclAllGather", unsafe { (api.all_gather)(send, ptr as *mut c_void, count, NCCL_FLOAT32, self.comm, stream) })
    }

    /// In place: `ptr` holds `world` slots of `count` f32; slot `rank` becomes the sum over the
    /// ranks of their slot `rank` (the other slots are left undefined), queued on `stream`.
    pub fn reduce_scatter_sum_f32(&self, ptr: u64, count: usize, rank: usize, stream: *mut c_void) -> Result<()> {
        let api = api()?;
        let recv = (ptr + (rank * count * 4) as u64) as *mut c_void;
        // SAFETY: as `all_gather_f32`: `world * count` live f32, the receive slot inside them
        // (NCCL's in-place form), the GPU's live stream.
        check(api, "ncclReduceScatter", unsafe { (api.reduce_scatter)(ptr as *const c_void, recv, count, NCCL_FLOAT32, NCCL_SUM, self.comm, stream) })
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        if let Ok(api) = api() {
            // SAFETY: made by ncclCommInitRank and destroyed once.
            let _ = unsafe { (api.comm_destroy)(self.comm) };
        }
    }
}
