#include "jobs/process.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "chip/error.hpp"

namespace lpurt::jobs {

ProgramResult run_program(const std::vector<std::string>& argv, bool with_stderr) {
  int out[2];
  if (pipe(out) != 0) throw Error("cannot create a pipe to run " + argv[0], ExitCode::runtime);
  const pid_t pid = fork();
  if (pid < 0) throw Error("cannot fork to run " + argv[0], ExitCode::runtime);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    if (with_stderr) dup2(out[1], STDERR_FILENO);
    close(out[0]);
    close(out[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);  // the caller reports it: it knows what the program was for
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<std::size_t>(n));
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), text};
}

}  // namespace lpurt::jobs
