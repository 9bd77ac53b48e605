/* Undoes `elem_begin.h`. */
#undef CAT_
#undef CAT
#undef ELEM
#undef LOAD8
#undef STORE8
#undef LOAD1
#undef STORE1
#undef NAME
#undef ELEM_BF16
