#include "jobs/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "chip/error.hpp"

extern char** environ;

namespace lpurt::jobs {

ProgramResult run_program(const std::vector<std::string>& argv, bool with_stderr, double timeout_s) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) throw Error("cannot create a pipe to run " + argv[0], ExitCode::runtime);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  if (with_stderr) posix_spawn_file_actions_adddup2(&actions, out[1], STDERR_FILENO);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  ProgramResult result;
  if (spawned != 0) {
    close(out[0]);
    result.exit_code = 127;  // the caller reports it: it knows what the program was for
    return result;
  }
  // Read while waiting, so that a talkative child never blocks on a full pipe.
  const auto start = std::chrono::steady_clock::now();
  char buf[4096];
  for (bool open = true; open;) {
    pollfd fd{out[0], POLLIN, 0};
    const int ready = poll(&fd, 1, 50);
    if (ready > 0) {
      const ssize_t n = read(out[0], buf, sizeof buf);
      if (n > 0) result.output.append(buf, static_cast<std::size_t>(n));
      else if (n == 0 || errno != EINTR) open = false;
    }
    if (timeout_s > 0 && !result.timed_out &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_s) {
      kill(pid, SIGKILL);
      result.timed_out = true;
      open = false;
    }
  }
  close(out[0]);
  // The child may close its output and go on: the time limit holds until it has exited.
  int status = 0;
  for (;;) {
    const pid_t done = waitpid(pid, &status, timeout_s > 0 ? WNOHANG : 0);
    if (done == pid) break;
    if (done < 0 && errno != EINTR)
      throw Error("cannot wait for " + argv[0] + " (waitpid: errno " + std::to_string(errno) + ")", ExitCode::runtime);
    if (done == 0 && std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_s &&
        !result.timed_out) {
      kill(pid, SIGKILL);
      result.timed_out = true;
    }
    if (done == 0) poll(nullptr, 0, 10);
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  else result.signal = WTERMSIG(status), result.exit_code = 128 + result.signal;
  while (!result.output.empty() && (result.output.back() == '\n' || result.output.back() == '\r')) result.output.pop_back();
  return result;
}

}  // namespace lpurt::jobs
