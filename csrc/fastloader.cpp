// mmengine._fastloader: the C++ side of mmengine.data.fastloader.
//
// Three functions over a 1-D token array (uint16 or uint32, C-contiguous, usually an np.memmap
// read in place): paragraph_starts, gather_windows, gather_documents. Each one validates its
// arguments once with the GIL held, allocates its numpy outputs, then releases the GIL and runs
// the loops in loader_kernels.h on raw pointers, writing straight into the numpy buffers (no
// copy on the way out). Semantics are documented in mmengine/data/reference.py, which holds
// numpy implementations of the same three functions.
//
// Scalar arguments arrive as Python objects and are checked here rather than by pybind11's
// casters, which would take True as 1 and give a multi-line signature dump for 3.7 or "8":
// every mistake is one TypeError / ValueError sentence naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "loader_kernels.h"

namespace py = pybind11;

namespace {

using Int64Array = py::array_t<int64_t, py::array::c_style>;

// Work (tokens scanned or copied) below which threads=0 stays on one thread: starting a thread
// costs tens of microseconds, which only pays off once the loop itself takes a millisecond or so.
constexpr int64_t kScanParallelMin = int64_t{1} << 22;
constexpr int64_t kGatherParallelMin = int64_t{1} << 20;
constexpr int kMaxThreads = 64;

enum class TokenType { U16, U32 };
enum class OutType { I64, I32, U16 };

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

std::string describe(const py::handle& v) {
    return py::repr(v).cast<std::string>() + " (" + Py_TYPE(v.ptr())->tp_name + ")";
}

// A masked array is an ndarray subclass whose mask the loops would never look at: a masked
// token or start would be read as whatever value sits under the mask. Plain ndarrays (the hot
// path) are told apart by one pointer compare; numpy.ma is imported lazily by numpy, so when
// sys.modules lacks it no argument can be a masked array.
void refuse_masked(const py::handle& a, const char* name) {
    if (Py_TYPE(a.ptr()) == py::detail::npy_api::get().PyArray_Type_) return;
    PyObject* ma = PyDict_GetItemString(PyImport_GetModuleDict(), "numpy.ma");  // borrowed
    if (ma == nullptr) return;
    const py::object masked = py::reinterpret_borrow<py::object>(ma).attr("MaskedArray");
    if (py::isinstance(a, masked))
        throw py::type_error(std::string(name) +
                             " is a masked array, whose mask the loader would ignore: pass "
                             "np.ma.filled(...) or .data explicitly, or drop the masked entries");
}

// An integer argument: a Python int or a numpy integer (whatever operator.index takes), never
// a bool, float or str. Converting those (int(3.7) == 3, int("8") == 8, True == 1) would run
// with a value nobody wrote, so they are a TypeError naming the argument.
int64_t int_arg(const py::handle& v, const char* name) {
    const char* type_name = Py_TYPE(v.ptr())->tp_name;
    const bool is_bool = PyBool_Check(v.ptr()) || std::strcmp(type_name, "numpy.bool") == 0 ||
                         std::strcmp(type_name, "numpy.bool_") == 0;
    PyObject* index = is_bool ? nullptr : PyNumber_Index(v.ptr());
    if (index == nullptr) {
        PyErr_Clear();
        throw py::type_error(std::string(name) + " must be an integer, got " + describe(v));
    }
    int overflow = 0;
    const long long value = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (overflow != 0)
        throw py::value_error(std::string(name) + " must fit in int64, got " + describe(v));
    return static_cast<int64_t>(value);
}

// A flag: True / False (numpy's bools too), not any object with a truth value ("no" is true).
bool bool_arg(const py::handle& v, const char* name) {
    if (v.ptr() == Py_True) return true;
    if (v.ptr() == Py_False) return false;
    const char* type_name = Py_TYPE(v.ptr())->tp_name;
    if (std::strcmp(type_name, "numpy.bool") == 0 || std::strcmp(type_name, "numpy.bool_") == 0)
        return PyObject_IsTrue(v.ptr()) == 1;
    throw py::type_error(std::string(name) + " must be True or False, got " + describe(v));
}

// tokens must be a 1-D, C-contiguous, aligned, native-endian uint16 / uint32 array: never
// copied or converted, so a mistake is a TypeError rather than a silent multi-GB copy.
TokenType check_tokens(const py::array& tokens) {
    refuse_masked(tokens, "tokens");
    TokenType type;
    if (py::isinstance<py::array_t<uint16_t>>(tokens)) {
        type = TokenType::U16;
    } else if (py::isinstance<py::array_t<uint32_t>>(tokens)) {
        type = TokenType::U32;
    } else if (tokens.dtype().kind() == 'u' && tokens.dtype().byteorder() == '>' &&
               (tokens.itemsize() == 2 || tokens.itemsize() == 4)) {
        throw py::type_error("tokens must be native-endian uint16 or uint32, got big-endian dtype " +
                             dtype_name(tokens) +
                             " (convert the file once, e.g. tokens.astype(tokens.dtype.newbyteorder('=')))");
    } else {
        throw py::type_error("tokens must be a numpy array of dtype uint16 or uint32, got dtype " +
                             dtype_name(tokens));
    }
    if (tokens.ndim() != 1)
        throw py::type_error("tokens must be a 1-D array, got " + std::to_string(tokens.ndim()) +
                             " dimensions");
    const int need = py::array::c_style | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
    if ((tokens.flags() & need) != need)
        throw py::type_error(
            "tokens must be C-contiguous and aligned (pass np.ascontiguousarray(tokens) if a copy "
            "is acceptable)");
    return type;
}

// Index arguments (separator, starts, doc_offsets, doc_ids) must already be 1-D C-contiguous
// native int64 arrays (the Python wrapper converts lists and other integer dtypes by value).
// Taken as plain objects, because pybind11's array_t caster would turn a masked array into a
// plain ndarray before refuse_masked could see it.
Int64Array index_array(const py::object& a, const char* name) {
    refuse_masked(a, name);
    if (!Int64Array::check_(a))
        throw py::type_error(std::string(name) +
                             " must be a C-contiguous numpy array of native int64, got " +
                             (py::isinstance<py::array>(a) ? "dtype " + dtype_name(py::reinterpret_borrow<py::array>(a)) + " array"
                                                           : describe(a)));
    Int64Array arr = Int64Array::ensure(a);
    if (arr.ndim() != 1)
        throw py::type_error(std::string(name) + " must be a 1-D int64 array, got " +
                             std::to_string(arr.ndim()) + " dimensions");
    return arr;
}

// The output dtype, in native byte order only: the arrays are written by plain C++ stores.
OutType check_out_dtype(const py::object& dtype_arg) {
    py::dtype dt;
    try {
        dt = py::dtype::from_args(dtype_arg);
    } catch (py::error_already_set&) {
        throw py::type_error("dtype must be int64, int32 or uint16, got " + describe(dtype_arg));
    }
    const char kind = dt.kind();
    const auto size = dt.itemsize();
    const bool sized = (kind == 'i' && (size == 8 || size == 4)) || (kind == 'u' && size == 2);
    // str(dtype) runs Python code in numpy (microseconds): only on the way to an error
    if (sized && dt.byteorder() == '>')
        throw py::type_error("dtype must be in native byte order, got big-endian " +
                             py::str(dt).cast<std::string>() +
                             " (the outputs are written in native order)");
    if (kind == 'i' && size == 8) return OutType::I64;
    if (kind == 'i' && size == 4) return OutType::I32;
    if (kind == 'u' && size == 2) return OutType::U16;
    throw py::type_error("dtype must be int64, int32 or uint16, got " + py::str(dt).cast<std::string>());
}

int64_t check_block_size(const py::handle& arg) {
    const int64_t block_size = int_arg(arg, "block_size");
    if (block_size < 1)
        throw py::value_error("block_size must be >= 1, got " + std::to_string(block_size));
    return block_size;
}

int64_t check_threads(const py::handle& arg) {
    const int64_t threads = int_arg(arg, "threads");
    if (threads < 0)
        throw py::value_error("threads must be >= 0 (0 picks a default), got " +
                              std::to_string(threads));
    return threads;
}

// threads > 0: exactly that many (at most one per unit of work, at most kMaxThreads);
// threads == 0: one thread below `parallel_min` units of work, else min(hardware threads, 4).
int resolve_threads(int64_t threads, int64_t work, int64_t parallel_min, int64_t units) {
    if (threads == 0) {
        if (work < parallel_min) return 1;
        const unsigned hw = std::thread::hardware_concurrency();
        threads = static_cast<int64_t>(std::min(4u, hw == 0 ? 1u : hw));
    }
    threads = std::min<int64_t>(threads, kMaxThreads);
    return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, units)));
}

// (rows, cols) C-contiguous output, allocated by numpy (which checks the size for overflow) and
// filled in place by the loops, so it reaches Python without a copy. (A pool that recycled
// freed outputs was tried and measured: no faster on B=64, T=1024, since glibc's dynamic mmap
// threshold already serves repeated same-size requests from the heap.)
template <typename T>
py::array_t<T> new_2d(int64_t rows, int64_t cols) {
    return py::array_t<T>({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(cols)});
}

// Calls fn(Tok{}, Out{}) with the C++ types named by (token dtype, output dtype), so that each
// entry point below writes its typed body once, as a generic lambda.
template <typename Fn>
decltype(auto) dispatch(TokenType tok, OutType out, Fn&& fn) {
    auto with_out = [&](auto t) -> decltype(auto) {
        switch (out) {
            case OutType::I64: return fn(t, int64_t{});
            case OutType::I32: return fn(t, int32_t{});
            default: return fn(t, uint16_t{});
        }
    };
    if (tok == TokenType::U16) return with_out(uint16_t{});
    return with_out(uint32_t{});
}

// True when a Tok value may not fit in Out (uint32 -> int32 / uint16): the copied tokens are
// then checked first, so that a narrowing output never wraps silently.
template <typename Tok, typename Out>
constexpr bool kMayNarrow =
    sizeof(Tok) > sizeof(Out) || (sizeof(Tok) == sizeof(Out) && std::is_signed_v<Out>);

// --------------------------------------------------------------------------------------------
// paragraph_starts
//
// Sorted positions p where a window of block_size tokens may start at a paragraph start: p = 0,
// and every p >= k with tokens[p-k:p] == separator and tokens[p] != separator[0]; only p with
// p + block_size <= len(tokens). The candidate range [k, n - block_size] is cut into one
// contiguous chunk per thread; each thread scans its chunk into its own vector (windows that
// cross a chunk edge are fine: every thread reads the whole array, it only *reports* positions
// in its chunk), and the vectors are concatenated in chunk order, which keeps the output sorted
// and independent of the thread count.
template <typename Tok>
py::array_t<int64_t> paragraph_starts_impl(const py::array& tokens_arr, const Int64Array& separator,
                                           int64_t block_size, int64_t threads) {
    const Tok* tok = static_cast<const Tok*>(tokens_arr.data());
    const int64_t n = tokens_arr.shape(0);
    const int64_t k = separator.shape(0);
    std::vector<Tok> sep(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) {
        const int64_t v = separator.at(j);
        if (v < 0 || v > static_cast<int64_t>(std::numeric_limits<Tok>::max()))
            throw py::value_error("separator id " + std::to_string(v) + " does not fit in " +
                                  dtype_name(tokens_arr) + " tokens");
        sep[j] = static_cast<Tok>(v);
    }
    if (block_size > n) return py::array_t<int64_t>(0);

    const int64_t p_begin = k;                  // first p with room for a separator before it
    const int64_t p_end = n - block_size + 1;   // one past the last p whose window fits
    const int64_t span = std::max<int64_t>(0, p_end - p_begin);
    const int n_threads = resolve_threads(threads, span, kScanParallelMin, span);
    // Capacity hint: one start per 64 tokens covers prose (a paragraph is ~100+ tokens) without
    // regrowth; the unused tail is never touched, so it costs address space, not memory.
    const size_t hint = static_cast<size_t>(std::min<int64_t>(span / n_threads / 64, int64_t{1} << 22));
    std::vector<fastloader::Positions> found;
    found.reserve(n_threads);
    for (int c = 0; c < n_threads; ++c) found.emplace_back(hint);
    {
        py::gil_scoped_release release;
        fastloader::parallel_chunks(span, n_threads, [&](int64_t b, int64_t e, int c) {
            if (b < e) fastloader::scan_paragraphs(tok, sep.data(), k, p_begin + b, p_begin + e,
                                                   found[c]);
        });
    }
    int64_t total = 1;  // position 0
    for (const auto& f : found) total += static_cast<int64_t>(f.size);
    py::array_t<int64_t> out(total);
    int64_t* dst = out.mutable_data();
    dst[0] = 0;
    int64_t at = 1;
    for (const auto& f : found) {
        if (f.size) std::memcpy(dst + at, f.data.get(), f.size * sizeof(int64_t));
        at += static_cast<int64_t>(f.size);
    }
    return out;
}

py::array_t<int64_t> paragraph_starts(const py::array& tokens, const py::object& separator_arg,
                                      const py::object& block_size_arg, const py::object& threads_arg) {
    const TokenType type = check_tokens(tokens);
    const Int64Array separator = index_array(separator_arg, "separator");
    if (separator.shape(0) == 0) throw py::value_error("separator must not be empty");
    const int64_t block_size = check_block_size(block_size_arg);
    const int64_t threads = check_threads(threads_arg);
    if (type == TokenType::U16)
        return paragraph_starts_impl<uint16_t>(tokens, separator, block_size, threads);
    return paragraph_starts_impl<uint32_t>(tokens, separator, block_size, threads);
}

// --------------------------------------------------------------------------------------------
// gather_windows
//
// x[r] = tokens[starts[r] : starts[r] + block_size] (and y[r] the same shifted by one when
// shift). The starts are copied and checked with the GIL held, and the loops read that copy, so
// another thread writing to `starts` meanwhile cannot turn a checked start into a bad read.
// A narrowing output (uint32 tokens into int32 / uint16) is allowed only if every copied token
// fits. The copy then runs row by row, rows split into contiguous per-thread ranges when the
// batch is large.
py::object gather_windows(const py::array& tokens, const py::object& starts_arg,
                          const py::object& block_size_arg, const py::object& shift_arg,
                          const py::object& dtype, const py::object& threads_arg) {
    const TokenType tok_type = check_tokens(tokens);
    const Int64Array starts = index_array(starts_arg, "starts");
    const int64_t block_size = check_block_size(block_size_arg);
    const bool shift = bool_arg(shift_arg, "shift");
    const OutType out_type = check_out_dtype(dtype);
    const int64_t threads = check_threads(threads_arg);
    const int64_t n = tokens.shape(0);
    const int64_t extra = shift ? 1 : 0;  // y reads one token past x
    // largest valid start, -1 when none is (written so that a huge block_size cannot overflow)
    const int64_t last_ok = block_size > n ? -1 : n - block_size - extra;
    const int64_t rows = starts.shape(0);
    const std::vector<int64_t> st(starts.data(), starts.data() + rows);
    for (int64_t r = 0; r < rows; ++r) {
        if (st[r] < 0 || st[r] > last_ok)
            throw py::index_error("start " + std::to_string(st[r]) + " (starts[" +
                                  std::to_string(r) + "]) is out of range: a window of " +
                                  std::to_string(block_size) + (shift ? " + 1" : "") +
                                  " tokens from it does not fit in " + std::to_string(n) +
                                  " tokens");
    }
    const int64_t width = rows == 0 ? 0 : block_size + extra;  // <= n once a start is valid
    return dispatch(tok_type, out_type, [&](auto tok_tag, auto out_tag) -> py::object {
        using Tok = decltype(tok_tag);
        using Out = decltype(out_tag);
        const Tok* tok = static_cast<const Tok*>(tokens.data());
        if constexpr (kMayNarrow<Tok, Out>) {
            Tok m;
            {
                py::gil_scoped_release release;
                m = fastloader::max_in_windows(tok, st.data(), rows, width);
            }
            if (static_cast<uint64_t>(m) > static_cast<uint64_t>(std::numeric_limits<Out>::max()))
                throw py::value_error("token id " + std::to_string(m) +
                                      " does not fit in the requested output dtype");
        }
        auto x = new_2d<Out>(rows, block_size);
        py::array_t<Out> y = shift ? new_2d<Out>(rows, block_size) : py::array_t<Out>();
        Out* xp = x.mutable_data();
        Out* yp = shift ? y.mutable_data() : nullptr;
        const int n_threads = resolve_threads(threads, rows * width, kGatherParallelMin, rows);
        {
            py::gil_scoped_release release;
            fastloader::parallel_chunks(rows, n_threads, [&](int64_t b, int64_t e, int) {
                fastloader::gather_rows(tok, st.data(), b, e, block_size, xp, yp);
            });
        }
        if (shift) return py::make_tuple(x, y);
        return std::move(x);
    });
}

// --------------------------------------------------------------------------------------------
// gather_documents
//
// Row r = [cls_id, the first min(len(doc), block_size - 1) tokens of document doc_ids[r],
// pad_id ...], lengths[r] = 1 + the number of document tokens copied. Offsets are validated in
// full (O(n_docs), sequential) and ids one by one, with the GIL held, into a private list of
// (first token, count) per row that the loop then reads (see gather_windows on why a copy).
py::tuple gather_documents(const py::array& tokens, const py::object& doc_offsets_arg,
                           const py::object& doc_ids_arg, const py::object& block_size_arg,
                           const py::object& cls_id_arg, const py::object& pad_id_arg,
                           const py::object& dtype) {
    const TokenType tok_type = check_tokens(tokens);
    const Int64Array doc_offsets = index_array(doc_offsets_arg, "doc_offsets");
    const Int64Array doc_ids = index_array(doc_ids_arg, "doc_ids");
    const int64_t block_size = check_block_size(block_size_arg);
    const int64_t cls_id = int_arg(cls_id_arg, "cls_id");
    const int64_t pad_id = int_arg(pad_id_arg, "pad_id");
    const OutType out_type = check_out_dtype(dtype);
    const int64_t n = tokens.shape(0);
    const int64_t n_offsets = doc_offsets.shape(0);
    const int64_t* off = doc_offsets.data();
    if (n_offsets == 0)
        throw py::value_error("doc_offsets must hold n_docs + 1 entries, got an empty array");
    if (off[0] < 0)
        throw py::value_error("doc_offsets[0] must be >= 0, got " + std::to_string(off[0]));
    for (int64_t d = 0; d + 1 < n_offsets; ++d) {
        if (off[d + 1] < off[d])
            throw py::value_error("doc_offsets must be non-decreasing, but doc_offsets[" +
                                  std::to_string(d + 1) + "] = " + std::to_string(off[d + 1]) +
                                  " < doc_offsets[" + std::to_string(d) +
                                  "] = " + std::to_string(off[d]));
    }
    if (off[n_offsets - 1] > n)
        throw py::value_error("doc_offsets[-1] = " + std::to_string(off[n_offsets - 1]) +
                              " is past the end of the " + std::to_string(n) + " tokens");
    const int64_t n_docs = n_offsets - 1;
    const int64_t rows = doc_ids.shape(0);
    const std::vector<int64_t> ids(doc_ids.data(), doc_ids.data() + rows);
    std::vector<int64_t> begin(static_cast<size_t>(rows)), count(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t d = ids[r];
        if (d < 0 || d >= n_docs)
            throw py::index_error("doc id " + std::to_string(d) + " (doc_ids[" +
                                  std::to_string(r) + "]) is out of range for " +
                                  std::to_string(n_docs) + " documents");
        // read each offset once: the checked values are the ones used
        const int64_t b = off[d], e = off[d + 1];
        if (b < 0 || e < b || e > n)
            throw py::value_error("doc_offsets changed while being read");
        begin[r] = b;
        count[r] = std::min(e - b, block_size - 1);
    }
    return dispatch(tok_type, out_type, [&](auto tok_tag, auto out_tag) -> py::tuple {
        using Tok = decltype(tok_tag);
        using Out = decltype(out_tag);
        for (const auto& [name, v] : {std::pair{"cls_id", cls_id}, std::pair{"pad_id", pad_id}}) {
            if (v < static_cast<int64_t>(std::numeric_limits<Out>::min()) ||
                v > static_cast<int64_t>(std::numeric_limits<Out>::max()))
                throw py::value_error(std::string(name) + " " + std::to_string(v) +
                                      " does not fit in the requested output dtype");
        }
        const Tok* tok = static_cast<const Tok*>(tokens.data());
        if constexpr (kMayNarrow<Tok, Out>) {
            constexpr auto limit = static_cast<uint64_t>(std::numeric_limits<Out>::max());
            int64_t bad = -1;  // first row holding a token that does not fit
            Tok m = 0;
            {
                py::gil_scoped_release release;
                for (int64_t r = 0; r < rows && bad < 0; ++r) {
                    m = fastloader::max_in_windows(tok, &begin[r], 1, count[r]);
                    if (static_cast<uint64_t>(m) > limit) bad = r;
                }
            }
            if (bad >= 0)
                throw py::value_error("token id " + std::to_string(m) + " in document " +
                                      std::to_string(ids[bad]) +
                                      " does not fit in the requested output dtype");
        }
        auto x = new_2d<Out>(rows, block_size);
        py::array_t<int64_t> lengths(rows);
        Out* xp = x.mutable_data();
        int64_t* lp = lengths.mutable_data();
        {
            py::gil_scoped_release release;
            fastloader::gather_docs(tok, begin.data(), count.data(), rows, block_size,
                                    static_cast<Out>(cls_id), static_cast<Out>(pad_id), xp, lp);
        }
        return py::make_tuple(x, lengths);
    });
}

}  // namespace

PYBIND11_MODULE(_fastloader, m) {
    m.doc() =
        "C++ fast loader for mmengine (paragraph scan and batch assembly over uint16/uint32 "
        "token arrays). Use it through mmengine.data.fastloader.";
    m.def("paragraph_starts", &paragraph_starts, py::arg("tokens").noconvert(),
          py::arg("separator").noconvert(), py::arg("block_size"), py::kw_only(),
          py::arg("threads") = 0,
          "Sorted int64 positions where a block_size window starts at a paragraph start.");
    m.def("gather_windows", &gather_windows, py::arg("tokens").noconvert(),
          py::arg("starts").noconvert(), py::arg("block_size"), py::kw_only(),
          py::arg("shift") = false, py::arg("dtype") = py::str("int64"), py::arg("threads") = 0,
          "x[i] = tokens[starts[i]:starts[i]+block_size] (and y shifted by one when shift).");
    m.def("gather_documents", &gather_documents, py::arg("tokens").noconvert(),
          py::arg("doc_offsets").noconvert(), py::arg("doc_ids").noconvert(),
          py::arg("block_size"), py::kw_only(), py::arg("cls_id"), py::arg("pad_id"),
          py::arg("dtype") = py::str("int64"),
          "Rows of [cls_id, document tokens..., pad_id...] and their lengths.");
}
