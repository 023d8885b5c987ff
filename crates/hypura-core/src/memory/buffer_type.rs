//! hypura's own ggml buffer type, which holds both weight tiers.
//!
//! Every tensor hypura manages lives in one buffer of this type: an anonymous mapping reserved
//! with `MAP_NORESERVE`, so address space costs nothing until a page is written. RAM-tier
//! tensors are written once after load (by [`crate::io`]) and stay; file-tier tensors are
//! read into the streaming window just before they are used (by [`crate::stream`]), or into
//! their own pages, handed back with `MADV_DONTNEED` after. The buffer records each tensor llama.cpp creates in it
//! (`init_tensor`), so hypura knows every tensor's address.
//!
//! llama.cpp's loader (load mode NONE) reads each tensor of a host buffer straight into its
//! memory, so it never reads a real weight byte: hypura hands it a header-only stand-in file
//! ([`crate::io::StandIn`]) whose data reads as zeros. While loading, every tensor's data
//! pointer is turned to one [`ScratchWindow`] as large as the largest tensor, so those zeros
//! land in a few MiB of memory whatever the model's size and each page of the window is
//! faulted in once, not once per tensor; the buffers themselves are never written. When
//! loading ends, every tensor gets its own address back.
//!
//! The same type can also *wrap* ggml's `CPU_REPACK` or `AMX` type ([`HypuraBufferType::wrapping`]),
//! for the weights llama.cpp would keep in its repacked layout when the whole model fits:
//! the buffers are ggml's, but while loading they present themselves as hypura's host
//! buffers, so the loader reads the stand-in's zeros into the load window instead of
//! converting them on its one thread; hypura converts the real bytes afterwards, in
//! parallel ([`crate::runtime::repacked`]). It wraps a GPU's buffer type in the same way for
//! the GPU tier: the loader uploads nothing, and hypura sets the real bytes afterwards.
//!
//! The structs below mirror `ggml/src/ggml-backend-impl.h` of the pinned llama-cpp-sys-2
//! (it is not part of the generated bindings). The layout is version-specific: the
//! end-to-end identity tests exercise it inside real llama.cpp graphs.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::pages::{reserve, ScratchWindow, PAGE_BYTES};
use crate::sys;

#[repr(C)]
struct BufferTypeIface {
    get_name: Option<unsafe extern "C" fn(*mut BufferType) -> *const c_char>,
    alloc_buffer: Option<unsafe extern "C" fn(*mut BufferType, usize) -> *mut Buffer>,
    alloc_buffer_n: Option<
        unsafe extern "C" fn(*mut BufferType, *mut *mut sys::ggml_tensor, i32) -> *mut Buffer,
    >,
    get_alignment: Option<unsafe extern "C" fn(*mut BufferType) -> usize>,
    get_max_size: Option<unsafe extern "C" fn(*mut BufferType) -> usize>,
    get_alloc_size: Option<unsafe extern "C" fn(*mut BufferType, *const sys::ggml_tensor) -> usize>,
    get_alloc_size_n:
        Option<unsafe extern "C" fn(*mut BufferType, *mut *mut sys::ggml_tensor, i32) -> usize>,
    is_host: Option<unsafe extern "C" fn(*mut BufferType) -> bool>,
}

#[repr(C)]
struct BufferType {
    iface: BufferTypeIface,
    device: sys::ggml_backend_dev_t,
    context: *mut c_void,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct BufferIface {
    free_buffer: Option<unsafe extern "C" fn(*mut Buffer)>,
    get_base: Option<unsafe extern "C" fn(*mut Buffer) -> *mut c_void>,
    init_tensor: Option<unsafe extern "C" fn(*mut Buffer, *mut sys::ggml_tensor) -> i32>,
    memset_tensor:
        Option<unsafe extern "C" fn(*mut Buffer, *mut sys::ggml_tensor, u8, usize, usize)>,
    set_tensor: Option<
        unsafe extern "C" fn(*mut Buffer, *mut sys::ggml_tensor, *const c_void, usize, usize),
    >,
    get_tensor: Option<
        unsafe extern "C" fn(*mut Buffer, *const sys::ggml_tensor, *mut c_void, usize, usize),
    >,
    set_tensor_2d: Option<
        unsafe extern "C" fn(
            *mut Buffer,
            *mut sys::ggml_tensor,
            *const c_void,
            usize,
            usize,
            usize,
            usize,
            usize,
        ),
    >,
    get_tensor_2d: Option<
        unsafe extern "C" fn(
            *mut Buffer,
            *const sys::ggml_tensor,
            *mut c_void,
            usize,
            usize,
            usize,
            usize,
            usize,
        ),
    >,
    cpy_tensor: Option<
        unsafe extern "C" fn(*mut Buffer, *const sys::ggml_tensor, *mut sys::ggml_tensor) -> bool,
    >,
    clear: Option<unsafe extern "C" fn(*mut Buffer, u8)>,
    reset: Option<unsafe extern "C" fn(*mut Buffer)>,
}

#[repr(C)]
struct Buffer {
    iface: BufferIface,
    buft: *mut BufferType,
    context: *mut c_void,
    size: usize,
    usage: i32,
}

extern "C" {
    fn ggml_backend_buffer_init(
        buft: *mut BufferType,
        iface: BufferIface,
        context: *mut c_void,
        size: usize,
    ) -> *mut Buffer;
}

/// A tensor llama.cpp created in a hypura buffer.
#[derive(Debug, Clone)]
pub(crate) struct RegisteredTensor {
    /// The ggml tensor (owned by llama.cpp's model).
    pub tensor: NonNull<sys::ggml_tensor>,
    /// Its name (a tied head's duplicate has the embedding's name).
    pub name: String,
}

// SAFETY: the pointers are only dereferenced while the owning model is alive, and hypura
// serializes access to tensor memory through the scheduler.
unsafe impl Send for RegisteredTensor {}

struct Mapping {
    base: *mut c_void,
    size: usize,
}

/// The window the loader writes into, and the tensors turned to it with their own addresses,
/// in registration order.
#[derive(Default)]
struct LoadWindow {
    window: Option<ScratchWindow>,
    homes: Vec<(NonNull<sys::ggml_tensor>, *mut c_void)>,
}

/// State shared by the buffer type and the buffers it allocates.
struct TierState {
    name: CString,
    /// True while llama.cpp loads the model: writes into the buffers are thrown away.
    loading: AtomicBool,
    tensors: Mutex<Vec<RegisteredTensor>>,
    /// Where the loader's reads go while loading.
    load_window: Mutex<LoadWindow>,
    /// Tensors placed at the same offset within a page as their bytes have in the model
    /// file, by name: read straight into place with `O_DIRECT` (no bounce copy), slice by
    /// slice. Each gets a page more, so it still has its own pages.
    page_offsets: Mutex<HashMap<String, usize>>,
    /// Why the last allocation failed, for the load error.
    alloc_error: Mutex<Option<String>>,
    /// Set when this type wraps another one (see [`HypuraBufferType::wrapping`]).
    wrapped: Option<Wrapped>,
}

type InitTensorFn = unsafe extern "C" fn(*mut Buffer, *mut sys::ggml_tensor) -> i32;

/// The buffer type a wrapping type allocates its buffers from, and those buffers.
struct Wrapped {
    inner: *mut BufferType,
    /// The inner type's `init_tensor` (the same for all its buffers).
    inner_init: Mutex<Option<InitTensorFn>>,
    /// Buffers allocated (as addresses), turned back to the inner type when loading ends.
    buffers: Mutex<Vec<usize>>,
}

impl TierState {
    /// The offset within its first page that tensor `name` is placed at, if it is one of
    /// the tensors placed like the file.
    fn page_offset(&self, name: &CStr) -> Option<usize> {
        let offsets = self.page_offsets.lock().ok()?;
        if offsets.is_empty() {
            return None;
        }
        offsets.get(name.to_str().ok()?).copied()
    }

    fn note_error(&self, message: String) {
        log::debug!("hypura: {message}");
        if let Ok(mut e) = self.alloc_error.lock() {
            *e = Some(message);
        }
    }
}

/// hypura's buffer type. Keep it alive for as long as any model loaded with it.
pub(crate) struct HypuraBufferType {
    buft: Box<BufferType>,
    state: Box<TierState>,
}

// SAFETY: the raw pointers inside point to heap memory owned by this value; the state is
// behind a Mutex and atomics.
unsafe impl Send for HypuraBufferType {}
// SAFETY: as above: all shared mutation goes through the Mutex / atomics.
unsafe impl Sync for HypuraBufferType {}

impl HypuraBufferType {
    /// Creates the buffer type, reporting the CPU device as its device.
    pub(crate) fn new(name: &str) -> Self {
        Self::create(name, None)
    }

    /// A buffer type whose buffers are `inner`'s (ggml's `CPU_REPACK`), so their tensors
    /// keep `inner`'s layout and kernels, but which llama.cpp's loader sees as host memory
    /// while it loads: it reads each tensor's (stand-in) bytes straight into the load window
    /// instead of staging and converting them on its one thread. hypura fills them after the
    /// load, through `inner`'s own conversion ([`sys::ggml_backend_tensor_set`]), on several
    /// threads. When loading ends the buffers are turned back into `inner`'s, as ggml made
    /// them.
    ///
    /// # Safety
    /// `inner` must be a live buffer type, alive as long as this value. Its buffers may hold
    /// device memory: while loading, the loader's reads land in the load window, never at a
    /// tensor's own `data`, and hypura writes the tensors only through
    /// [`sys::ggml_backend_tensor_set`] once loading has ended.
    pub(crate) unsafe fn wrapping(name: &str, inner: sys::ggml_backend_buffer_type_t) -> Self {
        Self::create(
            name,
            Some(Wrapped {
                inner: inner.cast(),
                inner_init: Mutex::new(None),
                buffers: Mutex::new(Vec::new()),
            }),
        )
    }

    fn create(name: &str, wrapped: Option<Wrapped>) -> Self {
        let mut state = Box::new(TierState {
            name: CString::new(name).unwrap_or_else(|_| CString::from(c"HYPURA")),
            loading: AtomicBool::new(true),
            tensors: Mutex::new(Vec::new()),
            load_window: Mutex::new(LoadWindow::default()),
            page_offsets: Mutex::new(HashMap::new()),
            alloc_error: Mutex::new(None),
            wrapped,
        });
        // SAFETY: plain lookup of the CPU device in ggml's registry.
        let device = unsafe { sys::ggml_backend_dev_by_type(sys::GGML_BACKEND_DEVICE_TYPE_CPU) };
        let buft = Box::new(BufferType {
            iface: BufferTypeIface {
                get_name: Some(buft_get_name),
                alloc_buffer: Some(buft_alloc_buffer),
                alloc_buffer_n: None,
                get_alignment: Some(buft_get_alignment),
                get_max_size: None,
                get_alloc_size: Some(buft_get_alloc_size),
                get_alloc_size_n: None,
                is_host: Some(buft_is_host),
            },
            device,
            context: (&mut *state as *mut TierState).cast(),
        });
        Self { buft, state }
    }

    /// Places the tensors named in `file_offsets` at the same offset within a page as their
    /// bytes in the model file (`file_offset % PAGE_BYTES`), so that the reader can read their
    /// whole pages straight into place. Call before the model is loaded.
    pub(crate) fn place_like_file(&self, file_offsets: impl IntoIterator<Item = (String, u64)>) {
        if let Ok(mut offsets) = self.state.page_offsets.lock() {
            offsets.extend(
                file_offsets
                    .into_iter()
                    .map(|(name, offset)| (name, (offset % PAGE_BYTES as u64) as usize)),
            );
        }
    }

    /// The pointer to pass to llama.cpp (`tensor_buft_overrides`).
    pub(crate) fn as_raw(&self) -> sys::ggml_backend_buffer_type_t {
        (&*self.buft as *const BufferType).cast_mut().cast()
    }

    /// Turns the data pointer of every tensor registered since the last call to the load
    /// window (grown to the largest of them), so that what llama.cpp's loader reads lands
    /// there. Called by the loader's progress callback, before each tensor is read.
    pub(crate) fn redirect_loader_reads(&self) -> Result<(), String> {
        if !self.state.loading.load(Ordering::SeqCst) {
            return Ok(());
        }
        let tensors = self
            .state
            .tensors
            .lock()
            .map_err(|_| "the tensor list is poisoned".to_string())?;
        let mut load = self
            .state
            .load_window
            .lock()
            .map_err(|_| "the load window is poisoned".to_string())?;
        let pending = &tensors[load.homes.len().min(tensors.len())..];
        // SAFETY: registered tensors belong to the model being loaded, alive during its load.
        let largest = pending
            .iter()
            .map(|t| unsafe { sys::ggml_nbytes(t.tensor.as_ptr()) })
            .max()
            .unwrap_or(0);
        if largest > load.window.as_ref().map_or(0, ScratchWindow::size) {
            let window = ScratchWindow::new(largest)
                .map_err(|e| format!("cannot map the load window: {e}"))?;
            for (tensor, _) in &load.homes {
                // SAFETY: as above; the loader runs this callback between its reads, so
                // nothing uses the pointer meanwhile.
                unsafe { (*tensor.as_ptr()).data = window.base() };
            }
            load.window = Some(window);
        }
        let Some(base) = load.window.as_ref().map(ScratchWindow::base) else {
            return Ok(());
        };
        for t in pending {
            // SAFETY: as above.
            unsafe {
                let home = (*t.tensor.as_ptr()).data;
                (*t.tensor.as_ptr()).data = base;
                load.homes.push((t.tensor, home));
            }
        }
        Ok(())
    }

    /// Ends the load phase: every tensor gets its own address back, and the load window is
    /// unmapped. The buffers were never written, so their pages are all still reserved.
    pub(crate) fn finish_loading(&self) {
        self.state.loading.store(false, Ordering::SeqCst);
        if let Ok(mut load) = self.state.load_window.lock() {
            for (tensor, home) in load.homes.drain(..) {
                // SAFETY: called right after llama.cpp's load returned the model that owns
                // these tensors; nothing computes with them yet.
                unsafe { (*tensor.as_ptr()).data = home };
            }
            load.window = None;
        }
        if let Some(w) = &self.state.wrapped {
            let init = w.inner_init.lock().ok().and_then(|i| *i);
            if let Ok(mut buffers) = w.buffers.lock() {
                for buffer in buffers.drain(..) {
                    let buffer = buffer as *mut Buffer;
                    // SAFETY: buffers of the model just loaded (llama.cpp frees them only with
                    // the model); nothing uses them yet. They become the inner type's again.
                    unsafe {
                        (*buffer).buft = w.inner;
                        (*buffer).iface.init_tensor = init;
                    }
                }
            }
        }
    }

    /// Records why the load has to stop, for the load error.
    pub(crate) fn note_error(&self, message: String) {
        self.state.note_error(message);
    }

    /// Why an allocation failed, if one did.
    pub(crate) fn take_alloc_error(&self) -> Option<String> {
        self.state.alloc_error.lock().ok()?.take()
    }

    /// The tensors llama.cpp created in buffers of this type, in creation order.
    pub(crate) fn tensors(&self) -> Vec<RegisteredTensor> {
        self.state
            .tensors
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }
}

unsafe fn state_of<'a>(buft: *mut BufferType) -> &'a TierState {
    // SAFETY: `context` was set to the boxed TierState, which outlives every buffer.
    unsafe { &*((*buft).context as *const TierState) }
}

unsafe extern "C" fn buft_get_name(buft: *mut BufferType) -> *const c_char {
    // SAFETY: called by ggml with the pointer we created.
    unsafe { state_of(buft) }.name.as_ptr()
}

unsafe extern "C" fn buft_get_alignment(buft: *mut BufferType) -> usize {
    // SAFETY: called by ggml with the pointer we created; the inner type is alive.
    unsafe {
        match &state_of(buft).wrapped {
            Some(w) => sys::ggml_backend_buft_get_alignment(w.inner.cast()),
            None => PAGE_BYTES,
        }
    }
}

unsafe extern "C" fn buft_get_alloc_size(
    buft: *mut BufferType,
    tensor: *const sys::ggml_tensor,
) -> usize {
    // SAFETY: ggml passes our buffer type and a live tensor; a wrapped type is alive.
    unsafe {
        let state = state_of(buft);
        if let Some(w) = &state.wrapped {
            // The inner type's size (a GPU's pads quantized rows).
            return sys::ggml_backend_buft_get_alloc_size(w.inner.cast(), tensor.cast_mut());
        }
        let nbytes = sys::ggml_nbytes(tensor);
        let name = CStr::from_ptr((*tensor).name.as_ptr());
        match state.page_offset(name) {
            // Room to start anywhere in the first page and still end on a page of its own.
            Some(_) => nbytes + PAGE_BYTES,
            None => nbytes,
        }
    }
}

unsafe extern "C" fn buft_is_host(_buft: *mut BufferType) -> bool {
    true
}

unsafe extern "C" fn buft_alloc_buffer(buft: *mut BufferType, size: usize) -> *mut Buffer {
    // SAFETY: called by ggml with the pointer we created.
    if let Some(w) = &unsafe { state_of(buft) }.wrapped {
        // SAFETY: the inner type is alive (the contract of `wrapping`).
        return unsafe { alloc_wrapped(buft, w, size) };
    }
    let size = size.max(1).div_ceil(PAGE_BYTES) * PAGE_BYTES;
    let base = match reserve(size) {
        Ok(base) => base.as_ptr(),
        Err(e) => {
            // SAFETY: called by ggml with the pointer we created.
            unsafe { state_of(buft) }
                .note_error(format!("cannot reserve {size} bytes of address space: {e}"));
            return ptr::null_mut();
        }
    };
    let mapping = Box::into_raw(Box::new(Mapping { base, size }));
    let iface = BufferIface {
        free_buffer: Some(buf_free),
        get_base: Some(buf_get_base),
        init_tensor: Some(buf_init_tensor),
        memset_tensor: Some(buf_memset_tensor),
        set_tensor: Some(buf_set_tensor),
        get_tensor: Some(buf_get_tensor),
        set_tensor_2d: None,
        get_tensor_2d: None,
        cpy_tensor: Some(buf_cpy_tensor),
        clear: Some(buf_clear),
        reset: None,
    };
    // SAFETY: buft is ours; ggml copies the iface and takes the context pointer.
    let buffer = unsafe { ggml_backend_buffer_init(buft, iface, mapping.cast(), size) };
    if buffer.is_null() {
        // SAFETY: we just created both and nobody else holds them.
        unsafe {
            libc::munmap(base, size);
            drop(Box::from_raw(mapping));
        }
    }
    buffer
}

/// A buffer of the wrapped type, presented as ours until loading ends.
///
/// # Safety
/// `buft` is ours and `w` its wrapped state, whose inner type is alive.
unsafe fn alloc_wrapped(buft: *mut BufferType, w: &Wrapped, size: usize) -> *mut Buffer {
    // SAFETY: guaranteed by the caller; ggml's own allocation of the inner type.
    unsafe {
        let Some(alloc) = (*w.inner).iface.alloc_buffer else {
            state_of(buft).note_error("the wrapped buffer type cannot allocate".into());
            return ptr::null_mut();
        };
        let buffer = alloc(w.inner, size);
        if buffer.is_null() {
            state_of(buft).note_error(format!("cannot allocate {size} bytes"));
            return buffer;
        }
        if let Ok(mut init) = w.inner_init.lock() {
            *init = (*buffer).iface.init_tensor;
        }
        (*buffer).iface.init_tensor = Some(wrapped_init_tensor);
        (*buffer).buft = buft;
        if let Ok(mut buffers) = w.buffers.lock() {
            buffers.push(buffer as usize);
        }
        buffer
    }
}

unsafe extern "C" fn wrapped_init_tensor(
    buffer: *mut Buffer,
    tensor: *mut sys::ggml_tensor,
) -> i32 {
    // SAFETY: ggml passes a live tensor and a buffer made by `alloc_wrapped`, whose type is
    // ours while loading (the only time this runs).
    unsafe {
        let state = state_of((*buffer).buft);
        let Some(w) = &state.wrapped else { return -1 };
        let init = w.inner_init.lock().ok().and_then(|i| *i);
        if let Some(init) = init {
            let status = init(buffer, tensor);
            if status != 0 {
                return status;
            }
        }
        if !(*tensor).view_src.is_null() {
            return 0;
        }
        let name = CStr::from_ptr((*tensor).name.as_ptr())
            .to_string_lossy()
            .into_owned();
        if let (Ok(mut tensors), Some(ptr)) = (state.tensors.lock(), NonNull::new(tensor)) {
            tensors.push(RegisteredTensor { tensor: ptr, name });
        }
    }
    0 // GGML_STATUS_SUCCESS
}

unsafe fn mapping_of<'a>(buffer: *mut Buffer) -> &'a Mapping {
    // SAFETY: the context of our buffers is always a boxed Mapping.
    unsafe { &*((*buffer).context as *const Mapping) }
}

unsafe extern "C" fn buf_free(buffer: *mut Buffer) {
    // SAFETY: ggml calls this once per buffer; the Mapping was boxed in alloc_buffer.
    unsafe {
        let mapping = Box::from_raw((*buffer).context as *mut Mapping);
        libc::munmap(mapping.base, mapping.size);
    }
}

unsafe extern "C" fn buf_get_base(buffer: *mut Buffer) -> *mut c_void {
    // SAFETY: our buffer.
    unsafe { mapping_of(buffer) }.base
}

unsafe extern "C" fn buf_init_tensor(buffer: *mut Buffer, tensor: *mut sys::ggml_tensor) -> i32 {
    // SAFETY: ggml passes a live tensor and our buffer.
    unsafe {
        if !(*tensor).view_src.is_null() {
            return 0;
        }
        let state = state_of((*buffer).buft);
        let name = CStr::from_ptr((*tensor).name.as_ptr());
        if let Some(offset) = state.page_offset(name) {
            // ggml gave the tensor a page more than its bytes (`buft_get_alloc_size`), and
            // its start is page-aligned (the buffer's alignment).
            (*tensor).data = (*tensor).data.cast::<u8>().add(offset).cast();
        }
        let name = name.to_string_lossy().into_owned();
        if let (Ok(mut tensors), Some(ptr)) = (state.tensors.lock(), NonNull::new(tensor)) {
            tensors.push(RegisteredTensor { tensor: ptr, name });
        }
    }
    0 // GGML_STATUS_SUCCESS
}

unsafe extern "C" fn buf_set_tensor(
    buffer: *mut Buffer,
    tensor: *mut sys::ggml_tensor,
    data: *const c_void,
    offset: usize,
    size: usize,
) {
    // SAFETY: ggml passes a tensor of our buffer and a source of `size` bytes.
    unsafe {
        if state_of((*buffer).buft).loading.load(Ordering::SeqCst) {
            return; // hypura fills weights itself, from the real file
        }
        ptr::copy_nonoverlapping(
            data.cast::<u8>(),
            (*tensor).data.cast::<u8>().add(offset),
            size,
        );
    }
}

unsafe extern "C" fn buf_get_tensor(
    _buffer: *mut Buffer,
    tensor: *const sys::ggml_tensor,
    data: *mut c_void,
    offset: usize,
    size: usize,
) {
    // SAFETY: ggml passes a tensor of our buffer and a destination of `size` bytes.
    unsafe {
        ptr::copy_nonoverlapping(
            (*tensor).data.cast::<u8>().add(offset),
            data.cast::<u8>(),
            size,
        )
    }
}

unsafe extern "C" fn buf_memset_tensor(
    buffer: *mut Buffer,
    tensor: *mut sys::ggml_tensor,
    value: u8,
    offset: usize,
    size: usize,
) {
    // SAFETY: ggml passes a tensor of our buffer; the range lies inside it.
    unsafe {
        if state_of((*buffer).buft).loading.load(Ordering::SeqCst) {
            return; // hypura fills weights itself, from the real file
        }
        ptr::write_bytes((*tensor).data.cast::<u8>().add(offset), value, size)
    }
}

unsafe extern "C" fn buf_cpy_tensor(
    _buffer: *mut Buffer,
    src: *const sys::ggml_tensor,
    dst: *mut sys::ggml_tensor,
) -> bool {
    // SAFETY: ggml passes live tensors; a host source can be copied directly.
    unsafe {
        if (*src).buffer.is_null() || !sys::ggml_backend_buffer_is_host((*src).buffer) {
            return false;
        }
        ptr::copy_nonoverlapping(
            (*src).data.cast::<u8>(),
            (*dst).data.cast::<u8>(),
            sys::ggml_nbytes(src),
        );
    }
    true
}

unsafe extern "C" fn buf_clear(buffer: *mut Buffer, value: u8) {
    // SAFETY: our buffer; zeroing is done by dropping the pages so nothing is faulted in.
    unsafe {
        if state_of((*buffer).buft).loading.load(Ordering::SeqCst) {
            return; // hypura fills weights itself, from the real file
        }
        let mapping = mapping_of(buffer);
        if value == 0 {
            libc::madvise(mapping.base, mapping.size, libc::MADV_DONTNEED);
        } else {
            ptr::write_bytes(mapping.base.cast::<u8>(), value, mapping.size);
        }
    }
}
