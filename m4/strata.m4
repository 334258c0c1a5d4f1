# strata.m4 - configure checks of Strata that need more than one line:
# STRATA_PROG_BISON (bison >= 3.6), STRATA_CHECK_LLVM (LLVM >= 18 through
# llvm-config), STRATA_CHECK_FUZZER (clang with libFuzzer, optional) and
# STRATA_CHECK_MPI (MPI for data-parallel training, optional).
# Error messages name the Debian 12 package to install.

# STRATA_PROG_BISON(MIN-VERSION)
# Sets and substitutes BISON; fails unless `$BISON --version` >= MIN-VERSION.
AC_DEFUN([STRATA_PROG_BISON],
[AC_ARG_VAR([BISON], [GNU bison >= $1])
AC_PATH_PROG([BISON], [bison])
AS_IF([test -z "$BISON"],
  [AC_MSG_ERROR([bison >= $1 is required (Debian: apt-get install bison)])])
AC_MSG_CHECKING([whether $BISON is at least version $1])
strata_bison_version=`$BISON --version 2>/dev/null | sed -n '1s/^.* \([[0-9]][[0-9.]]*\)[[^ ]]*$/\1/p'`
AS_VERSION_COMPARE([$strata_bison_version], [$1],
  [AC_MSG_RESULT([no, $strata_bison_version])
   AC_MSG_ERROR([bison >= $1 is required, found "$strata_bison_version" (Debian: apt-get install bison)])],
  [AC_MSG_RESULT([yes, $strata_bison_version])],
  [AC_MSG_RESULT([yes, $strata_bison_version])])
])

# STRATA_CHECK_LLVM(MIN-MAJOR)
# Finds llvm-config: $LLVM_CONFIG if set, else the first of llvm-config-19,
# llvm-config-18, llvm-config whose major version is >= MIN-MAJOR.  Sets and
# substitutes LLVM_CONFIG, LLVM_VERSION, LLVM_CFLAGS and LLVM_LIBS, and checks
# that a program using llvm-c/Core.h compiles and links.
AC_DEFUN([STRATA_CHECK_LLVM],
[AC_ARG_VAR([LLVM_CONFIG], [llvm-config of LLVM >= $1 (default: llvm-config-19, llvm-config-18, llvm-config)])
strata_llvm_hint="LLVM >= $1 is required (Debian 12: apt-get install llvm-19-dev), or set LLVM_CONFIG=/path/to/llvm-config"
AC_MSG_CHECKING([for llvm-config of LLVM >= $1])
AS_IF([test -n "$LLVM_CONFIG"],
  [strata_llvm_candidates=$LLVM_CONFIG],
  [strata_llvm_candidates="llvm-config-19 llvm-config-18 llvm-config"])
strata_llvm_found=
strata_llvm_seen=
for strata_llvm_cand in $strata_llvm_candidates; do
  case $strata_llvm_cand in
    */*) strata_llvm_path=$strata_llvm_cand ;;
    *) strata_llvm_path=`command -v "$strata_llvm_cand" 2>/dev/null` ;;
  esac
  test -n "$strata_llvm_path" && test -x "$strata_llvm_path" || continue
  strata_llvm_version=`"$strata_llvm_path" --version 2>/dev/null`
  strata_llvm_major=`echo "$strata_llvm_version" | sed -n 's/^\([[0-9]][[0-9]]*\).*/\1/p'`
  strata_llvm_seen="$strata_llvm_seen $strata_llvm_path ($strata_llvm_version)"
  AS_IF([test -n "$strata_llvm_major" && test "$strata_llvm_major" -ge $1],
    [strata_llvm_found=$strata_llvm_path
     break])
done
AS_IF([test -z "$strata_llvm_found"],
  [AS_IF([test -n "$strata_llvm_seen"],
     [AC_MSG_RESULT([too old:$strata_llvm_seen])],
     [AC_MSG_RESULT([no])])
   AC_MSG_ERROR([$strata_llvm_hint])])
LLVM_CONFIG=$strata_llvm_found
LLVM_VERSION=$strata_llvm_version
AC_MSG_RESULT([$LLVM_CONFIG ($LLVM_VERSION)])
LLVM_CFLAGS=`$LLVM_CONFIG --cflags`
strata_llvm_nvptx=
AS_CASE([" `$LLVM_CONFIG --targets-built 2>/dev/null` "], [*" NVPTX "*],
  [strata_llvm_nvptx=nvptx
   AC_DEFINE([HAVE_LLVM_NVPTX], [1], [Define if LLVM has the NVPTX target (GPU lowering, issue #18).])])
LLVM_LIBS=`$LLVM_CONFIG --ldflags --libs core orcjit native passes target $strata_llvm_nvptx --system-libs | tr '\n' ' '`
AC_SUBST([LLVM_VERSION])
AC_SUBST([LLVM_CFLAGS])
AC_SUBST([LLVM_LIBS])
strata_save_CPPFLAGS=$CPPFLAGS
strata_save_LIBS=$LIBS
CPPFLAGS="$LLVM_CFLAGS $CPPFLAGS"
LIBS="$LLVM_LIBS $LIBS"
AC_CHECK_HEADER([llvm-c/Core.h], [],
  [AC_MSG_ERROR([llvm-c/Core.h does not compile with LLVM_CFLAGS=$LLVM_CFLAGS; $strata_llvm_hint])])
AC_MSG_CHECKING([whether a program can link against LLVM])
AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <llvm-c/Core.h>]],
                                [[LLVMContextDispose(LLVMContextCreate());]])],
  [AC_MSG_RESULT([yes])],
  [AC_MSG_RESULT([no])
   AC_MSG_ERROR([cannot link with LLVM_LIBS=$LLVM_LIBS; $strata_llvm_hint])])
CPPFLAGS=$strata_save_CPPFLAGS
LIBS=$strata_save_LIBS
])

# STRATA_CHECK_FUZZER
# --enable-fuzzer=auto|yes|no (default auto).  Looks for FUZZ_CC (default
# clang-19, then clang) that links a trivial LLVMFuzzerTestOneInput with
# -fsanitize=fuzzer,address,undefined.  Defines the HAVE_FUZZER conditional.
AC_DEFUN([STRATA_CHECK_FUZZER],
[AC_ARG_VAR([FUZZ_CC], [clang with libFuzzer, for fuzz/fuzz_frontend (default: clang-19, then clang)])
AC_ARG_ENABLE([fuzzer],
  [AS_HELP_STRING([--enable-fuzzer=auto|yes|no],
                  [build the libFuzzer harness and run it in make check (default: auto)])],
  [], [enable_fuzzer=auto])
strata_have_fuzzer=no
AS_IF([test "x$enable_fuzzer" != xno],
  [AS_IF([test -z "$FUZZ_CC"], [AC_CHECK_PROGS([FUZZ_CC], [clang-19 clang])])
   AS_IF([test -n "$FUZZ_CC"],
     [AC_MSG_CHECKING([whether $FUZZ_CC links a libFuzzer target with ASan and UBSan])
      cat > conftest_fuzz.c <<'STRATA_EOF'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)data;
    (void)size;
    return 0;
}
STRATA_EOF
      AS_IF([$FUZZ_CC -fsanitize=fuzzer,address,undefined conftest_fuzz.c -o conftest_fuzz$EXEEXT >&AS_MESSAGE_LOG_FD 2>&1],
        [strata_have_fuzzer=yes])
      rm -f conftest_fuzz.c conftest_fuzz$EXEEXT
      AC_MSG_RESULT([$strata_have_fuzzer])])
   AS_IF([test "x$enable_fuzzer" = xyes && test "x$strata_have_fuzzer" != xyes],
     [AC_MSG_ERROR([--enable-fuzzer needs clang with libFuzzer (Debian 12: apt-get install clang-19 libclang-rt-19-dev), or set FUZZ_CC])])])
AM_CONDITIONAL([HAVE_FUZZER], [test "x$strata_have_fuzzer" = xyes])
])

# STRATA_CHECK_MPI
# --with-mpi=auto|yes|no (default auto): data-parallel training through MPI
# (runtime/collective.c).  Flags: MPI_CFLAGS/MPI_LIBS if the user set them,
# else `$MPICC -showme:compile` / `-showme:link` (Open MPI), else pkg-config
# ompi-c, then mpich.  CC stays the same compiler: only the flags are added,
# to the runtime and to what links it.  Defines HAVE_MPI (config.h and an
# Automake conditional) and substitutes MPI_CFLAGS, MPI_LIBS and MPIRUN
# (mpirun or mpiexec, for tests/mpi.test).  auto: MPI when mpicc is found
# and a test program links; yes: fail when it does not.
AC_DEFUN([STRATA_CHECK_MPI],
[AC_ARG_VAR([MPICC], [MPI compiler wrapper, asked for MPI's flags (default: mpicc)])
AC_ARG_VAR([MPI_CFLAGS], [C compiler flags for MPI, overriding mpicc/pkg-config])
AC_ARG_VAR([MPI_LIBS], [linker flags for MPI, overriding mpicc/pkg-config])
AC_ARG_WITH([mpi],
  [AS_HELP_STRING([--with-mpi=auto|yes|no],
                  [data-parallel training with MPI (default: auto, when mpicc is found)])],
  [], [with_mpi=auto])
strata_mpi_hint="(Debian: apt-get install libopenmpi-dev openmpi-bin), or set MPI_CFLAGS and MPI_LIBS"
strata_have_mpi=no
AS_CASE([$with_mpi],
  [yes|no|auto], [],
  [AC_MSG_ERROR([--with-mpi=$with_mpi: expected yes, no or auto])])
AS_IF([test "x$with_mpi" != xno],
  [AS_IF([test -z "$MPICC"], [AC_PATH_PROGS([MPICC], [mpicc])])
   strata_mpi_from=
   AS_IF([test -n "$MPI_CFLAGS$MPI_LIBS"], [strata_mpi_from="MPI_CFLAGS/MPI_LIBS"])
   AS_IF([test -z "$strata_mpi_from" && test -n "$MPICC"],
     [AS_IF([strata_mpi_c=`$MPICC -showme:compile 2>/dev/null` &&
             strata_mpi_l=`$MPICC -showme:link 2>/dev/null`],
        [MPI_CFLAGS=$strata_mpi_c
         MPI_LIBS=$strata_mpi_l
         strata_mpi_from="$MPICC -showme"])])
   AS_IF([test -z "$strata_mpi_from" && test -n "$MPICC$PKG_CONFIG"],
     [for strata_mpi_pc in ompi-c mpich; do
        AS_IF([test -n "$PKG_CONFIG" && $PKG_CONFIG --exists $strata_mpi_pc 2>/dev/null],
          [MPI_CFLAGS=`$PKG_CONFIG --cflags $strata_mpi_pc`
           MPI_LIBS=`$PKG_CONFIG --libs $strata_mpi_pc`
           strata_mpi_from="pkg-config $strata_mpi_pc"
           break])
      done])
   AS_IF([test -n "$strata_mpi_from"],
     [AC_MSG_CHECKING([whether a program links with MPI (flags from $strata_mpi_from)])
      strata_save_CPPFLAGS=$CPPFLAGS
      strata_save_LIBS=$LIBS
      CPPFLAGS="$MPI_CFLAGS $CPPFLAGS"
      LIBS="$MPI_LIBS $LIBS"
      AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <mpi.h>]],
                                      [[int p; MPI_Init_thread(0, 0, MPI_THREAD_FUNNELED, &p); MPI_Finalize();]])],
        [strata_have_mpi=yes])
      CPPFLAGS=$strata_save_CPPFLAGS
      LIBS=$strata_save_LIBS
      AC_MSG_RESULT([$strata_have_mpi])])
   AS_IF([test "x$with_mpi" = xyes && test "x$strata_have_mpi" != xyes],
     [AS_IF([test -z "$strata_mpi_from"],
        [AC_MSG_ERROR([--with-mpi: no mpicc, and pkg-config knows neither ompi-c nor mpich $strata_mpi_hint])],
        [AC_MSG_ERROR([--with-mpi: cannot link an MPI program with MPI_CFLAGS=$MPI_CFLAGS MPI_LIBS=$MPI_LIBS (see config.log) $strata_mpi_hint])])])])
AS_IF([test "x$strata_have_mpi" = xyes],
  [AC_DEFINE([HAVE_MPI], [1], [Define to 1 to build the MPI backend of runtime/collective.c.])
   AC_PATH_PROGS([MPIRUN], [mpirun mpiexec])],
  [MPI_CFLAGS=
   MPI_LIBS=
   MPIRUN=])
AC_SUBST([MPI_CFLAGS])
AC_SUBST([MPI_LIBS])
AC_SUBST([MPIRUN])
AM_CONDITIONAL([HAVE_MPI], [test "x$strata_have_mpi" = xyes])
])
