/*
 * _vpdecode.c -- fast extraction of GTFS-realtime VehiclePosition fields.
 *
 * Walks the protobuf wire format of a (decompressed) FeedMessage directly and returns the
 * VehiclePosition fields as Arrow-layout column buffers (validity bitmap + values, or
 * validity + int32 offsets + UTF-8 data for strings), which Python wraps zero-copy with
 * pyarrow.Array.from_buffers (see decode_fast.py).
 *
 * Messages and field numbers (gtfs-realtime.proto, proto2):
 *   FeedMessage       1 header (only checked for its required field), 2 entity
 *   FeedHeader        1 gtfs_realtime_version (presence only)
 *   FeedEntity        1 id, 2 is_deleted, 3 trip_update*, 4 vehicle, 5 alert*, 6 shape*,
 *                     7 stop*, 8 trip_modifications* (* noted and skipped)
 *   VehiclePosition   1 trip, 8 vehicle, 2 position, 3 current_stop_sequence, 7 stop_id,
 *                     4 current_status, 5 timestamp, 6 congestion_level, 9 occupancy_status
 *   TripDescriptor    1 trip_id, 5 route_id, 6 direction_id, 2 start_time, 3 start_date,
 *                     4 schedule_relationship
 *   VehicleDescriptor 1 id, 2 label
 *   Position          1 latitude, 2 longitude, 3 bearing (float), 4 odometer (double),
 *                     5 speed (float)
 *
 * Semantics follow protobuf's (upb's) parser exactly:
 *   - proto2 presence: a field is present when it appeared on the wire;
 *   - a scalar or string that appears twice: the last one wins;
 *   - a sub-message that appears twice: the two are merged (both parse into one row);
 *   - a known field number with the wrong wire type is an unknown field and is skipped
 *     (this covers "packed" encodings of our non-repeated scalars too);
 *   - unknown fields and extensions (TfNSW has some) are skipped, groups included;
 *   - closed (proto2) enums: a value outside the enum is an unknown field, so the field
 *     keeps its previous value or stays absent. The valid values come from Python as
 *     bit masks, read from the installed bindings' descriptors;
 *   - uint32 keeps the low 32 bits of the varint, enums the low 32 bits as int32, bool is
 *     "varint != 0", timestamp is the full uint64.
 *   - Strings that are not valid UTF-8 (protobuf-python returns them as bytes) are decoded
 *     with errors="backslashreplace" and counted, exactly like the Python path.
 *
 * It also reports whether every proto2 `required` field of a VehiclePositions-only feed is
 * present (see Ctx.verified_initialized), so Python can skip the costly IsInitialized()
 * walk when it is; anything else (a missing field, other entity parts) defers to it.
 *
 * Every read is bound-checked: a truncated or hostile body raises ValueError, never
 * crashes. Python falls back to the reference path on ValueError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Bumped whenever the Python-visible interface changes; decode_fast.py checks it. */
#define ABI_VERSION 2
/* Same nesting limit as upb's default; groups count as a level. */
#define MAX_DEPTH 100

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

/* Output columns, grouped by storage type. */
enum { S_ENTITY_ID, S_VEHICLE_ID, S_VEHICLE_LABEL, S_TRIP_ID, S_ROUTE_ID, S_START_TIME,
       S_START_DATE, S_STOP_ID, N_STR };
enum { I_DIRECTION_ID, I_SCHEDULE_RELATIONSHIP, I_CURRENT_STATUS, I_CONGESTION_LEVEL,
       I_OCCUPANCY_STATUS, N_I32 };
enum { F_LATITUDE, F_LONGITUDE, F_BEARING, F_SPEED, F_ODOMETER, N_F64 };
/* Closed enums, in the order of the enum_masks argument. */
enum { E_SCHEDULE_RELATIONSHIP, E_CURRENT_STATUS, E_CONGESTION_LEVEL, E_OCCUPANCY_STATUS,
       N_ENUM };

/* One index space for all columns; a row's presence bit for column c is (1 << c). */
#define C_STR(i) (i)
#define C_I32(i) (N_STR + (i))
#define C_F64(i) (N_STR + N_I32 + (i))
#define C_STOP_SEQUENCE (N_STR + N_I32 + N_F64)
#define C_TIMESTAMP (C_STOP_SEQUENCE + 1)
#define C_IS_DELETED (C_STOP_SEQUENCE + 2)
#define N_COLS (C_STOP_SEQUENCE + 3)

#define HAS_STR(i) (1u << C_STR(i))
#define HAS_I32(i) (1u << C_I32(i))
#define HAS_F64(i) (1u << C_F64(i))
#define HAS_STOP_SEQUENCE (1u << C_STOP_SEQUENCE)
#define HAS_TIMESTAMP (1u << C_TIMESTAMP)
#define HAS_IS_DELETED (1u << C_IS_DELETED)

static const char *const COL_NAMES[N_COLS] = {
    "entity_id", "vehicle_id", "vehicle_label", "trip_id", "route_id", "start_time",
    "start_date", "stop_id",
    "direction_id", "schedule_relationship", "current_status", "congestion_level",
    "occupancy_status",
    "latitude", "longitude", "bearing", "speed", "odometer",
    "current_stop_sequence", "vehicle_timestamp_raw", "is_deleted"};

typedef struct {
    const char *ptr; /* points into the body (or into a bytes object kept alive) */
    Py_ssize_t len;
} Str;

/* One entity's VehiclePosition fields while it is being parsed. */
typedef struct {
    uint32_t has;     /* presence bits */
    int non_ascii;    /* some string had a byte >= 0x80 (UTF-8 is checked later) */
    int is_deleted;
    int has_position; /* the VehiclePosition had a position (which requires lat/lon) */
    Str str[N_STR];
    int32_t i32[N_I32];
    double f64[N_F64];
    int64_t stop_sequence;
    uint64_t timestamp;
} Row;

typedef struct {
    Row *rows;
    Py_ssize_t n_rows, cap_rows;
    Py_ssize_t n_entities, n_trip_updates, n_alerts;
    /* 1 while every proto2 `required` field of a VehiclePositions-only feed is present:
     * header + its gtfs_realtime_version, every entity id, a position's lat and lon.
     * 0 when one is missing or an entity has another part (trip_update, alert, shape,
     * stop, trip_modifications), whose required fields are not checked here; Python then
     * calls IsInitialized(). */
    int verified_initialized;
    Py_ssize_t present[N_COLS];   /* rows where the column is not null */
    Py_ssize_t str_bytes[N_STR];  /* total bytes of each string column */
    uint64_t enum_masks[N_ENUM];
    const uint8_t *base;   /* start of the body, for error offsets */
    const char *error;     /* first error, static string */
    Py_ssize_t error_at;
} Ctx;

/* ------------------------------------------------------------------ wire primitives */

/* Record the first error and return NULL, so callers can `return fail(...)`. */
static const uint8_t *fail(Ctx *ctx, const uint8_t *at, const char *why) {
    if (ctx->error == NULL) {
        ctx->error = why;
        ctx->error_at = at ? (Py_ssize_t)(at - ctx->base) : -1;
    }
    return NULL;
}

/* Base-128 varint, at most 10 bytes (bits past 64 are dropped, as upb does). */
static const uint8_t *read_varint(const uint8_t *p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70 && p < end; shift += 7) {
        uint8_t b = *p++;
        if (shift < 64) v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return p;
        }
    }
    return NULL; /* truncated, or an 11th byte would be needed */
}

static const uint8_t *read_tag(Ctx *ctx, const uint8_t *p, const uint8_t *end,
                               uint32_t *field, int *wt) {
    uint64_t tag;
    const uint8_t *q = read_varint(p, end, &tag);
    if (q == NULL) return fail(ctx, p, "truncated tag");
    if (tag > UINT32_MAX || (tag >> 3) == 0) return fail(ctx, p, "invalid field number");
    *wt = (int)(tag & 7);
    if (*wt > WT_I32) return fail(ctx, p, "invalid wire type");
    *field = (uint32_t)(tag >> 3);
    return q;
}

/* Read a length prefix; on success *sub_end is the end of the delimited payload. */
static const uint8_t *read_len(Ctx *ctx, const uint8_t *p, const uint8_t *end,
                               const uint8_t **sub_end) {
    uint64_t len;
    const uint8_t *q = read_varint(p, end, &len);
    if (q == NULL) return fail(ctx, p, "truncated length");
    if (len > (uint64_t)(end - q)) return fail(ctx, p, "length past the end of the message");
    *sub_end = q + len;
    return q;
}

static uint32_t load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_le64(const uint8_t *p) {
    return (uint64_t)load_le32(p) | (uint64_t)load_le32(p + 4) << 32;
}

/* Skip one field whose tag has been read. Groups are skipped up to their matching end. */
static const uint8_t *skip_field(Ctx *ctx, const uint8_t *p, const uint8_t *end,
                                 uint32_t field, int wt, int depth) {
    uint64_t v;
    const uint8_t *sub_end, *q;
    switch (wt) {
    case WT_VARINT:
        q = read_varint(p, end, &v);
        return q ? q : fail(ctx, p, "truncated varint");
    case WT_I64:
        return end - p >= 8 ? p + 8 : fail(ctx, p, "truncated fixed64");
    case WT_I32:
        return end - p >= 4 ? p + 4 : fail(ctx, p, "truncated fixed32");
    case WT_LEN:
        return read_len(ctx, p, end, &sub_end) ? sub_end : NULL;
    case WT_SGROUP:
        if (depth >= MAX_DEPTH) return fail(ctx, p, "nesting too deep");
        while (p < end) {
            uint32_t f;
            int w;
            if ((p = read_tag(ctx, p, end, &f, &w)) == NULL) return NULL;
            if (w == WT_EGROUP) return f == field ? p : fail(ctx, p, "mismatched end group");
            if ((p = skip_field(ctx, p, end, f, w, depth + 1)) == NULL) return NULL;
        }
        return fail(ctx, p, "unterminated group");
    default: /* WT_EGROUP outside a group */
        return fail(ctx, p, "unexpected end group");
    }
}

/* 1 when no byte has its high bit set (8 bytes at a time). */
static int is_ascii(const uint8_t *s, Py_ssize_t n) {
    uint64_t acc = 0, w;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        acc |= w;
    }
    for (; i < n; i++) acc |= s[i];
    return (acc & 0x8080808080808080ULL) == 0;
}

/* Read a length-delimited string field into column `col` of the row (last one wins). */
static const uint8_t *read_str(Ctx *ctx, const uint8_t *p, const uint8_t *end, Row *row,
                               int col) {
    const uint8_t *sub_end;
    if ((p = read_len(ctx, p, end, &sub_end)) == NULL) return NULL;
    row->str[col].ptr = (const char *)p;
    row->str[col].len = sub_end - p;
    row->has |= HAS_STR(col);
    if (!is_ascii(p, sub_end - p)) row->non_ascii = 1;
    return sub_end;
}

/* Store a closed-enum varint only when the value is in the enum (else: unknown field). */
static void store_enum(Ctx *ctx, Row *row, int col, int which, uint64_t v) {
    int32_t e = (int32_t)(uint32_t)v;
    if (e >= 0 && e < 64 && (ctx->enum_masks[which] >> e) & 1) {
        row->i32[col] = e;
        row->has |= HAS_I32(col);
    }
}

/* The loop shared by every message parser: read a tag, let HANDLE consume the field or
 * `break` out of the switch to have it skipped as unknown. */
#define FOR_EACH_FIELD(ctx, p, end, depth, HANDLE)                                        \
    while (p < end) {                                                                     \
        uint32_t field;                                                                   \
        int wt;                                                                           \
        if ((p = read_tag(ctx, p, end, &field, &wt)) == NULL) return NULL;                \
        switch (field) { HANDLE }                                                         \
        if ((p = skip_field(ctx, p, end, field, wt, depth)) == NULL) return NULL;         \
    }                                                                                     \
    return p;

/* Varint field: read into `v` and run STORE, or fall through to skipping. */
#define VARINT_CASE(num, STORE)                                                           \
    case num:                                                                             \
        if (wt == WT_VARINT) {                                                            \
            uint64_t v;                                                                   \
            const uint8_t *q = read_varint(p, end, &v);                                   \
            if (q == NULL) return fail(ctx, p, "truncated varint");                       \
            p = q;                                                                        \
            STORE;                                                                        \
            continue;                                                                     \
        }                                                                                 \
        break;

#define STR_CASE(num, col)                                                                \
    case num:                                                                             \
        if (wt == WT_LEN) {                                                               \
            if ((p = read_str(ctx, p, end, row, col)) == NULL) return NULL;               \
            continue;                                                                     \
        }                                                                                 \
        break;

/* Sub-message field: parse it into the same row (so a repeated one merges). */
#define SUBMSG_CASE(num, PARSER)                                                          \
    case num:                                                                             \
        if (wt == WT_LEN) {                                                               \
            const uint8_t *sub_end;                                                       \
            if ((p = read_len(ctx, p, end, &sub_end)) == NULL) return NULL;               \
            if (depth + 1 >= MAX_DEPTH) return fail(ctx, p, "nesting too deep");          \
            if (PARSER(ctx, p, sub_end, row, depth + 1) == NULL) return NULL;             \
            p = sub_end;                                                                  \
            continue;                                                                     \
        }                                                                                 \
        break;

/* Float (fixed32) field of Position, widened to double exactly. */
#define FLOAT_CASE(num, col)                                                              \
    case num:                                                                             \
        if (wt == WT_I32) {                                                               \
            if (end - p < 4) return fail(ctx, p, "truncated fixed32");                    \
            uint32_t bits = load_le32(p);                                                 \
            float x;                                                                      \
            memcpy(&x, &bits, 4);                                                         \
            row->f64[col] = (double)x;                                                    \
            row->has |= HAS_F64(col);                                                     \
            p += 4;                                                                       \
            continue;                                                                     \
        }                                                                                 \
        break;

/* Double (fixed64) field of Position. */
#define DOUBLE_CASE(num, col)                                                             \
    case num:                                                                             \
        if (wt == WT_I64) {                                                               \
            if (end - p < 8) return fail(ctx, p, "truncated fixed64");                    \
            uint64_t bits = load_le64(p);                                                 \
            memcpy(&row->f64[col], &bits, 8);                                             \
            row->has |= HAS_F64(col);                                                     \
            p += 8;                                                                       \
            continue;                                                                     \
        }                                                                                 \
        break;

/* ------------------------------------------------------------------ message parsers */

static const uint8_t *parse_trip(Ctx *ctx, const uint8_t *p, const uint8_t *end, Row *row,
                                 int depth) {
    FOR_EACH_FIELD(ctx, p, end, depth,
        STR_CASE(1, S_TRIP_ID)
        STR_CASE(2, S_START_TIME)
        STR_CASE(3, S_START_DATE)
        VARINT_CASE(4, store_enum(ctx, row, I_SCHEDULE_RELATIONSHIP,
                                  E_SCHEDULE_RELATIONSHIP, v))
        STR_CASE(5, S_ROUTE_ID)
        /* uint32 on the wire, stored as int32 (bits kept: >= 2^31 reads negative) */
        VARINT_CASE(6, row->i32[I_DIRECTION_ID] = (int32_t)(uint32_t)v;
                       row->has |= HAS_I32(I_DIRECTION_ID))
    )
}

static const uint8_t *parse_vehicle_descriptor(Ctx *ctx, const uint8_t *p, const uint8_t *end,
                                               Row *row, int depth) {
    FOR_EACH_FIELD(ctx, p, end, depth,
        STR_CASE(1, S_VEHICLE_ID)
        STR_CASE(2, S_VEHICLE_LABEL)
    )
}

static const uint8_t *parse_position(Ctx *ctx, const uint8_t *p, const uint8_t *end, Row *row,
                                     int depth) {
    row->has_position = 1;
    FOR_EACH_FIELD(ctx, p, end, depth,
        FLOAT_CASE(1, F_LATITUDE)
        FLOAT_CASE(2, F_LONGITUDE)
        FLOAT_CASE(3, F_BEARING)
        DOUBLE_CASE(4, F_ODOMETER)
        FLOAT_CASE(5, F_SPEED)
    )
}

static const uint8_t *parse_vehicle_position(Ctx *ctx, const uint8_t *p, const uint8_t *end,
                                             Row *row, int depth) {
    FOR_EACH_FIELD(ctx, p, end, depth,
        SUBMSG_CASE(1, parse_trip)
        SUBMSG_CASE(2, parse_position)
        VARINT_CASE(3, row->stop_sequence = (int64_t)(uint32_t)v;
                       row->has |= HAS_STOP_SEQUENCE)
        VARINT_CASE(4, store_enum(ctx, row, I_CURRENT_STATUS, E_CURRENT_STATUS, v))
        VARINT_CASE(5, row->timestamp = v; row->has |= HAS_TIMESTAMP)
        VARINT_CASE(6, store_enum(ctx, row, I_CONGESTION_LEVEL, E_CONGESTION_LEVEL, v))
        STR_CASE(7, S_STOP_ID)
        SUBMSG_CASE(8, parse_vehicle_descriptor)
        VARINT_CASE(9, store_enum(ctx, row, I_OCCUPANCY_STATUS, E_OCCUPANCY_STATUS, v))
    )
}

/* Which parts a FeedEntity carried (as sub-messages with the right wire type). */
typedef struct {
    int vehicle, trip_update, alert, other;
} Parts;

/* Parse one FeedEntity into `row` (used only when parts->vehicle ends up set). */
static const uint8_t *parse_entity(Ctx *ctx, const uint8_t *p, const uint8_t *end, Row *row,
                                   int depth, Parts *parts) {
    FOR_EACH_FIELD(ctx, p, end, depth,
        STR_CASE(1, S_ENTITY_ID)
        VARINT_CASE(2, row->is_deleted = (v != 0); row->has |= HAS_IS_DELETED)
        case 3: /* trip_update, alert, shape, stop, trip_modifications: noted, skipped */
        case 5:
        case 6:
        case 7:
        case 8:
            if (wt == WT_LEN) {
                parts->trip_update |= field == 3;
                parts->alert |= field == 5;
                parts->other = 1;
            }
            break;
        case 4:
            if (wt == WT_LEN) {
                const uint8_t *sub_end;
                if ((p = read_len(ctx, p, end, &sub_end)) == NULL) return NULL;
                if (parse_vehicle_position(ctx, p, sub_end, row, depth + 1) == NULL)
                    return NULL;
                parts->vehicle = 1;
                p = sub_end;
                continue;
            }
            break;
    )
}

/* FeedHeader: only the presence of gtfs_realtime_version (required) is of interest. */
static const uint8_t *parse_header(Ctx *ctx, const uint8_t *p, const uint8_t *end,
                                   int *has_version, int depth) {
    FOR_EACH_FIELD(ctx, p, end, depth,
        case 1:
            if (wt == WT_LEN) *has_version = 1;
            break;
    )
}

static int grow_rows(Ctx *ctx) {
    Py_ssize_t cap = ctx->cap_rows ? ctx->cap_rows * 2 : 1024;
    if ((size_t)cap > PY_SSIZE_T_MAX / sizeof(Row)) return -1;
    Row *rows = PyMem_RawRealloc(ctx->rows, (size_t)cap * sizeof(Row));
    if (rows == NULL) return -1;
    ctx->rows = rows;
    ctx->cap_rows = cap;
    return 0;
}

/* Add a finished row to the per-column counts that size the output buffers. */
static void count_row(Ctx *ctx, const Row *row) {
    for (int c = 0; c < N_COLS; c++) ctx->present[c] += (row->has >> c) & 1;
    for (int c = 0; c < N_STR; c++)
        if (row->has & HAS_STR(c)) ctx->str_bytes[c] += row->str[c].len;
    ctx->n_rows++;
}

/* Count a parsed entity, keep its row when it has a vehicle, check its required fields. */
static void finish_entity(Ctx *ctx, const Row *row, const Parts *parts) {
    ctx->n_entities++;
    ctx->n_trip_updates += parts->trip_update;
    ctx->n_alerts += parts->alert;
    if (parts->other || !(row->has & HAS_STR(S_ENTITY_ID))) ctx->verified_initialized = 0;
    if (!parts->vehicle) return;
    const uint32_t lat_lon = HAS_F64(F_LATITUDE) | HAS_F64(F_LONGITUDE);
    if (row->has_position && (row->has & lat_lon) != lat_lon) ctx->verified_initialized = 0;
    count_row(ctx, row);
}

/* Walk the FeedMessage: one row per entity that carries a VehiclePosition. Runs without
 * the GIL (touches no Python object). Returns 0, or -1 with ctx->error set. */
static int parse_feed(Ctx *ctx, const uint8_t *p, const uint8_t *end) {
    int has_header = 0, has_version = 0;
    ctx->verified_initialized = 1;
    while (p < end) {
        uint32_t field;
        int wt;
        const uint8_t *sub_end;
        if ((p = read_tag(ctx, p, end, &field, &wt)) == NULL) return -1;
        if (field == 1 && wt == WT_LEN) { /* header (parsed again by protobuf in Python) */
            if ((p = read_len(ctx, p, end, &sub_end)) == NULL) return -1;
            if (parse_header(ctx, p, sub_end, &has_version, 1) == NULL) return -1;
            has_header = 1;
            p = sub_end;
            continue;
        }
        if (field != 2 || wt != WT_LEN) {
            if ((p = skip_field(ctx, p, end, field, wt, 0)) == NULL) return -1;
            continue;
        }
        if ((p = read_len(ctx, p, end, &sub_end)) == NULL) return -1;
        if (ctx->n_rows == ctx->cap_rows && grow_rows(ctx) < 0) {
            fail(ctx, NULL, "out of memory");
            return -1;
        }
        Row *row = &ctx->rows[ctx->n_rows];
        memset(row, 0, sizeof(Row));
        Parts parts = {0, 0, 0, 0};
        if (parse_entity(ctx, p, sub_end, row, 1, &parts) == NULL) return -1;
        finish_entity(ctx, row, &parts);
        p = sub_end;
    }
    if (!has_header || !has_version) ctx->verified_initialized = 0;
    return 0;
}

/* ------------------------------------------------------------------ column building */

/* Replace every string that is not valid UTF-8 (by Python's strict decoder, the test
 * protobuf-python applies) with its errors="backslashreplace" decoding, re-encoded. The
 * replacement bytes objects are appended to `keep`, which owns them. Only rows flagged
 * non_ascii are looked at. Returns the count of replaced strings, or -1 on a Python error. */
static Py_ssize_t fix_invalid_utf8(Ctx *ctx, PyObject *keep) {
    Py_ssize_t n_invalid = 0;
    for (Py_ssize_t r = 0; r < ctx->n_rows; r++) {
        Row *row = &ctx->rows[r];
        for (int c = 0; c < N_STR && row->non_ascii; c++) {
            Str *s = &row->str[c];
            if (!(row->has & HAS_STR(c))) continue;
            PyObject *u = PyUnicode_DecodeUTF8(s->ptr, s->len, NULL);
            if (u != NULL) {
                Py_DECREF(u);
                continue;
            }
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return -1;
            PyErr_Clear();
            u = PyUnicode_DecodeUTF8(s->ptr, s->len, "backslashreplace");
            if (u == NULL) return -1;
            PyObject *b = PyUnicode_AsUTF8String(u);
            Py_DECREF(u);
            if (b == NULL || PyList_Append(keep, b) < 0) {
                Py_XDECREF(b);
                return -1;
            }
            Py_DECREF(b); /* the list holds it */
            ctx->str_bytes[c] += PyBytes_GET_SIZE(b) - s->len;
            s->ptr = PyBytes_AS_STRING(b);
            s->len = PyBytes_GET_SIZE(b);
            n_invalid++;
        }
    }
    return n_invalid;
}

/* The Arrow buffers of one output column, as bytes objects (validity NULL: no nulls). */
typedef struct {
    PyObject *validity, *values, *data;
} Out;

/* A zeroed bytes object of `size` bytes (NULL with an exception on failure). */
static PyObject *new_zeroed_bytes(Py_ssize_t size) {
    PyObject *b = PyBytes_FromStringAndSize(NULL, size);
    if (b != NULL) memset(PyBytes_AS_STRING(b), 0, (size_t)size);
    return b;
}

static Py_ssize_t value_bytes(int c, Py_ssize_t n) {
    if (c < N_STR) return (n + 1) * 4;          /* int32 offsets */
    if (c < C_F64(0)) return n * 4;             /* int32 */
    if (c == C_IS_DELETED) return (n + 7) / 8;  /* bitmap */
    return n * 8;                               /* double, int64, uint64 */
}

/* Allocate every column's buffers, sized from the counts made while parsing. */
static int alloc_outputs(Ctx *ctx, Out out[N_COLS]) {
    Py_ssize_t n = ctx->n_rows;
    for (int c = 0; c < N_COLS; c++) {
        if (ctx->present[c] < n && (out[c].validity = new_zeroed_bytes((n + 7) / 8)) == NULL)
            return -1;
        if ((out[c].values = new_zeroed_bytes(value_bytes(c, n))) == NULL) return -1;
        if (c >= N_STR) continue;
        if (ctx->str_bytes[c] > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "string column larger than 2 GiB");
            return -1;
        }
        if ((out[c].data = PyBytes_FromStringAndSize(NULL, ctx->str_bytes[c])) == NULL)
            return -1;
    }
    return 0;
}

#define BUF(obj) ((uint8_t *)PyBytes_AS_STRING(obj))
#define SET_BIT(bits, r) ((bits)[(r) >> 3] |= (uint8_t)(1u << ((r) & 7)))

/* memcpy, with ids and dates (short) copied inline rather than through a libc call. */
static inline void copy_bytes(uint8_t *dst, const char *src, Py_ssize_t n) {
    if (n > 32) {
        memcpy(dst, src, (size_t)n);
        return;
    }
    for (Py_ssize_t i = 0; i < n; i++) dst[i] = (uint8_t)src[i];
}

/* Write one row into every column (null slots stay zero, their validity bit clear). */
static void fill_row(const Row *row, Py_ssize_t r, Out out[N_COLS], int32_t str_pos[N_STR]) {
    for (int c = 0; c < N_COLS; c++)
        if ((row->has >> c) & 1 && out[c].validity != NULL) SET_BIT(BUF(out[c].validity), r);
    for (int c = 0; c < N_STR; c++) {
        if (row->has & HAS_STR(c)) {
            copy_bytes(BUF(out[c].data) + str_pos[c], row->str[c].ptr, row->str[c].len);
            str_pos[c] += (int32_t)row->str[c].len;
        }
        memcpy(BUF(out[c].values) + (size_t)(r + 1) * 4, &str_pos[c], 4);
    }
    for (int c = 0; c < N_I32; c++)
        if (row->has & HAS_I32(c)) memcpy(BUF(out[C_I32(c)].values) + r * 4, &row->i32[c], 4);
    for (int c = 0; c < N_F64; c++)
        if (row->has & HAS_F64(c)) memcpy(BUF(out[C_F64(c)].values) + r * 8, &row->f64[c], 8);
    if (row->has & HAS_STOP_SEQUENCE)
        memcpy(BUF(out[C_STOP_SEQUENCE].values) + r * 8, &row->stop_sequence, 8);
    if (row->has & HAS_TIMESTAMP)
        memcpy(BUF(out[C_TIMESTAMP].values) + r * 8, &row->timestamp, 8);
    if ((row->has & HAS_IS_DELETED) && row->is_deleted)
        SET_BIT(BUF(out[C_IS_DELETED].values), r);
}

/* {name: (null_count, validity | None, values_or_offsets, string_data | None)}. */
static PyObject *build_columns(Ctx *ctx) {
    Out out[N_COLS];
    memset(out, 0, sizeof(out));
    PyObject *columns = NULL;
    if (alloc_outputs(ctx, out) < 0) goto done;
    int32_t str_pos[N_STR] = {0};
    for (Py_ssize_t r = 0; r < ctx->n_rows; r++) fill_row(&ctx->rows[r], r, out, str_pos);
    if ((columns = PyDict_New()) == NULL) goto done;
    for (int c = 0; c < N_COLS; c++) {
        PyObject *t = Py_BuildValue(
            "(nOOO)", ctx->n_rows - ctx->present[c], out[c].validity ? out[c].validity : Py_None,
            out[c].values, out[c].data ? out[c].data : Py_None);
        if (t == NULL || PyDict_SetItemString(columns, COL_NAMES[c], t) < 0) {
            Py_XDECREF(t);
            Py_CLEAR(columns);
            goto done;
        }
        Py_DECREF(t);
    }
done:
    for (int c = 0; c < N_COLS; c++) {
        Py_XDECREF(out[c].validity);
        Py_XDECREF(out[c].values);
        Py_XDECREF(out[c].data);
    }
    return columns;
}

/* ------------------------------------------------------------------ module */

static int read_enum_masks(PyObject *masks, uint64_t out[N_ENUM]) {
    if (!PyTuple_Check(masks) || PyTuple_GET_SIZE(masks) != N_ENUM) {
        PyErr_Format(PyExc_TypeError, "enum_masks must be a tuple of %d ints", N_ENUM);
        return -1;
    }
    for (int i = 0; i < N_ENUM; i++) {
        out[i] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(masks, i));
        if (PyErr_Occurred()) return -1;
    }
    return 0;
}

PyDoc_STRVAR(decode_doc,
"decode(body, enum_masks, /)\n--\n\n"
"Extract VehiclePosition columns from a decompressed FeedMessage.\n\n"
"enum_masks: valid values of (schedule_relationship, current_status, congestion_level,\n"
"occupancy_status) as bit masks (bit v set = value v is in the enum).\n"
"Returns (n_rows, n_entities, n_trip_updates, n_alerts, n_invalid_utf8, columns,\n"
"verified_initialized), where columns maps a column name to (null_count,\n"
"validity | None, values_or_offsets, string_data | None), and verified_initialized is\n"
"True when every required field of a VehiclePositions-only feed is present (False: call\n"
"IsInitialized()). Raises ValueError on a malformed body.");

static PyObject *vp_decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode() takes exactly 2 arguments");
        return NULL;
    }
    Ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    if (read_enum_masks(args[1], ctx.enum_masks) < 0) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *p = (const uint8_t *)view.buf;
    ctx.base = p;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = parse_feed(&ctx, p, p + view.len);
    Py_END_ALLOW_THREADS

    PyObject *result = NULL, *keep = NULL, *columns = NULL;
    if (rc < 0) {
        PyErr_Format(PyExc_ValueError, "malformed FeedMessage at byte %zd: %s", ctx.error_at,
                     ctx.error ? ctx.error : "unknown error");
        goto done;
    }
    if ((keep = PyList_New(0)) == NULL) goto done;
    Py_ssize_t n_invalid = fix_invalid_utf8(&ctx, keep);
    if (n_invalid < 0 || (columns = build_columns(&ctx)) == NULL) goto done;
    result = Py_BuildValue("(nnnnnNN)", ctx.n_rows, ctx.n_entities, ctx.n_trip_updates,
                           ctx.n_alerts, n_invalid, columns,
                           PyBool_FromLong(ctx.verified_initialized));
done:
    Py_XDECREF(keep);
    PyMem_RawFree(ctx.rows);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))vp_decode, METH_FASTCALL, decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_vpdecode",
    .m_doc = "Fast VehiclePosition column extraction from GTFS-realtime wire bytes.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__vpdecode(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "ABI_VERSION", ABI_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
