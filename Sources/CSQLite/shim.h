#ifndef LETHE_CSQLITE_SHIM_H
#define LETHE_CSQLITE_SHIM_H
#include <sqlite3.h>

// Swift cannot call C variadic functions; these wrap the ones Lethe needs.

/// Turns on "defensive" mode, so that writes to the schema or shadow tables are refused.
static inline int lethe_sqlite3_enable_defensive(sqlite3 *db) {
    return sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)0);
}
#endif
