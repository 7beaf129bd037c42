// A request's outcome: a gRPC status code and TF Serving's message for it.
#pragma once
#include <string>

enum Code {
  OK = 0, CANCELLED = 1, UNKNOWN = 2, INVALID_ARGUMENT = 3, DEADLINE_EXCEEDED = 4, NOT_FOUND = 5,
  ALREADY_EXISTS = 6, PERMISSION_DENIED = 7, RESOURCE_EXHAUSTED = 8, FAILED_PRECONDITION = 9,
  ABORTED = 10, OUT_OF_RANGE = 11, UNIMPLEMENTED = 12, INTERNAL = 13, UNAVAILABLE = 14,
  DATA_LOSS = 15, UNAUTHENTICATED = 16,
};

struct Status {
  int code = OK;
  std::string message;
  bool ok() const { return code == OK; }
  static Status Ok() { return {}; }
};

inline Status Error(int code, std::string message) { return Status{code, std::move(message)}; }
inline Status Invalid(std::string message) { return Error(INVALID_ARGUMENT, std::move(message)); }

// The names harness/codes.py gives the codes, and the HTTP status TF Serving's REST API answers.
const char* code_name(int code);
int http_status(int code);
