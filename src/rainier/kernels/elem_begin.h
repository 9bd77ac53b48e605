/* The element type of a body included once per type (`train_ops_body.h`, `layer_ops_body.h`):
 * with ELEM_BF16 defined as 1, bf16 held as uint16_t, else float32. Defines
 *   ELEM           the element
 *   LOAD8, STORE8  eight of them to and from a float32 vector
 *   LOAD1, STORE1  one of them to and from a float
 *   NAME(f)        f with the type's suffix (none for float32, _bf16)
 * `elem_end.h` undefines them all, ELEM_BF16 too. */
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#if ELEM_BF16
#define ELEM uint16_t
#define LOAD8 load8_bf16
#define STORE8 store8_bf16
#define LOAD1 from_bf16
#define STORE1 to_bf16
#define NAME(f) CAT(f, _bf16)
#else
#define ELEM float
#define LOAD8 load8
#define STORE8 store8
#define LOAD1(x) (x)
#define STORE1(x) (x)
#define NAME(f) f
#endif
