#!/usr/bin/env bash
# Two hosts on one machine: two network namespaces (lpurt-2h-1, lpurt-2h-2) joined by a veth pair
# (10.213.7.1/24 <-> 10.213.7.2/24), one MPI rank in each, talking over TCP only.
#  1. mpirun (in namespace 1) starts the second host's daemon through an rsh agent that enters namespace 2
#     (tests/runtime/netns-rsh.sh); btl tcp,self + pml ob1, restricted to the veth subnet. Each rank records
#     the namespace it ran in; the veth counters show the traffic. Three layouts: the pipeline split over
#     the hosts (tiny, 4 chips tp 2 x pp 2), a tensor-parallel group spanning the hosts (tiny, 2 chips tp 2),
#     and an MoE model with a 4-chip tensor-parallel group (tiny-mixtral, tp 4, 2 chips per host). A rank
#     on host 2 that dies ends the job within 10 s.
#  2. A two-node Slurm: slurmctld and slurmd "node1" in namespace 1, slurmd "node2" in namespace 2, a private
#     munged, private config/state/spool and ports; `sbatch -N 2 --ntasks-per-node=1` of slurm/run.sbatch
#     (as documented) and of a script of its own, both running `srun --mpi=pmix lpurt run`.
# Every 2-rank result's tokens and logits are bit-identical to a 1-rank run (no mpirun) of the same layout.
# Everything (namespaces, daemons, ranks) is removed at the end, on failure, and, at the start, whatever a
# killed earlier run left. Traffic only goes between the two namespaces' addresses.
# Needs root, iproute2, openmpi, slurm-wlm and munge; without them it is skipped (exit 77), unless
# LPURT_REQUIRE_SLURM=1 (CI) makes that a failure.
# Usage: two_hosts.sh LPURT WORKDIR PYTHON
set -euo pipefail
lpurt=$1 work=$2 python=$3
here=$(cd "$(dirname "$0")" && pwd)
skip() {
  if [ "${LPURT_REQUIRE_SLURM:-0}" = 1 ]; then echo "FAIL: $*" >&2; exit 1; fi
  echo "SKIP: $*"; exit 77
}
[ "$(id -u)" = 0 ] || skip "network namespaces and the Slurm daemons need root"
export PATH=$PATH:/usr/sbin:/sbin
for tool in ip nsenter runuser flock timeout mpirun h5diff sbatch srun squeue scontrol sinfo slurmctld slurmd munged munge; do
  command -v "$tool" >/dev/null || skip "$tool is not installed (apt-get install iproute2 openmpi-bin hdf5-tools slurm-wlm munge)"
done

NS1=lpurt-2h-1 NS2=lpurt-2h-2     # the two "hosts"
IF1=lpurt2h-1 IF2=lpurt2h-2       # the veth pair's ends, one in each namespace
A1=10.213.7.1 A2=10.213.7.2 NET=10.213.7.0/24
t_start=$(date +%s.%N)

# One run at a time on this machine (the namespace names are fixed). The lock goes with this shell, so a
# killed run releases it; children get fd 9 closed (9>&-) so that no leftover daemon keeps it.
lockdir=/run/lock; [ -d "$lockdir" ] || lockdir=/tmp
exec 9> "$lockdir/lpurt-two-hosts.lock"
flock -w 120 9 || { echo "FAIL: another two_hosts run held $lockdir/lpurt-two-hosts.lock for 120 s" >&2; exit 1; }

teardown() {  # every process in the two namespaces (ours by construction), then the namespaces and veth
  local i pids
  for i in $(seq 60); do
    pids=$(for ns in "$NS1" "$NS2"; do ip netns pids "$ns" 2>/dev/null || true; done)
    [ -n "$pids" ] || break
    if [ "$i" = 1 ]; then
      kill $pids 2>/dev/null || true
    elif [ "$i" = 40 ]; then
      echo "two_hosts: still running after 8 s, killing:" $(ps -o pid=,comm= -p "$(echo $pids | tr ' ' ,)") >&2
      kill -9 $pids 2>/dev/null || true
    fi
    sleep 0.2
  done
  [ -z "$pids" ] || echo "two_hosts: WARNING: processes left in the namespaces: $pids" >&2
  for ns in "$NS1" "$NS2"; do
    if ip netns list | grep -qw "$ns"; then ip netns del "$ns" 2>/dev/null || true; fi
  done
}
teardown  # leftovers of a run that was killed (SIGKILL from a ctest timeout runs no trap)
trap 'teardown' EXIT
trap 'exit 130' INT TERM HUP

fail() {
  echo "FAIL: $*" >&2
  for f in "$work"/slurm/log/*.log "$work"/slurm/slurm-*.out; do
    [ -s "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
  done
  exit 1
}
rm -rf "$work" && mkdir -p "$work" && cd "$work"

# 1. The two hosts.
ip netns add "$NS1" 2>/dev/null || skip "cannot create a network namespace (ip netns add: not permitted here)"
ip netns add "$NS2"
ip link add name "$IF1" netns "$NS1" type veth peer name "$IF2" netns "$NS2"
ip -n "$NS1" addr add "$A1/24" dev "$IF1"
ip -n "$NS2" addr add "$A2/24" dev "$IF2"
for ns in "$NS1" "$NS2"; do ip -n "$ns" link set lo up; done
ip -n "$NS1" link set "$IF1" up
ip -n "$NS2" link set "$IF2" up
in1() { timeout 60 ip netns exec "$NS1" "$@" 9>&-; }       # a command on host 1
veth_bytes() {  # bytes received + sent on host 1's end of the veth
  echo $(( $(ip netns exec "$NS1" cat /sys/class/net/$IF1/statistics/rx_bytes) + \
           $(ip netns exec "$NS1" cat /sys/class/net/$IF1/statistics/tx_bytes) ))
}

# in-ns.sh TAG CMD...: records "<rank> <network namespace>" in TAG.rank<rank>, then runs CMD
cat > in-ns.sh <<'EOF'
#!/bin/sh
tag=$1; shift
rank=${PMIX_RANK:-${OMPI_COMM_WORLD_RANK:-${SLURM_PROCID:-x}}}
echo "$rank $(ip netns identify $$) ${SLURMD_NODENAME:-}" > "$tag.rank$rank"
exec "$@"
EOF
chmod +x in-ns.sh
ranks_in_both() {  # ranks_in_both TAG: rank 0 ran in namespace 1 and rank 1 in namespace 2
  local r0 r1
  r0=$(cat "$1.rank0" 2>/dev/null || true) r1=$(cat "$1.rank1" 2>/dev/null || true)
  [ "$(echo "$r0" | cut -d' ' -f1-2)" = "0 $NS1" ] && [ "$(echo "$r1" | cut -d' ' -f1-2)" = "1 $NS2" ] ||
    fail "$1: ranks did not run one per host: rank 0 '$r0', rank 1 '$r1'"
  [ ! -e "$1.rank2" ] || fail "$1: more than 2 ranks"
}
same_as_one_rank() {  # same_as_one_rank REF OUT: tokens and logits bit-identical (as in mpi_bit_identity.sh)
  h5diff -q "$1" "$2" /tokens || fail "tokens of $2 differ from the 1-rank run $1"
  h5diff -q "$1" "$2" /logits || fail "logits of $2 differ from the 1-rank run $1"
}
placement() {  # placement OUT.h5 pp|tp: 2 ranks, both hold chips, and a stage boundary / a tp group spans them
  "$python" - "$1" "$2" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    ranks, m = int(f.attrs["ranks"]), f["metrics"]
    chip_rank, chip_stage = m["chip_rank"][:].astype(int), m["chip_stage"][:].astype(int)
assert ranks == 2 and set(chip_rank) == {0, 1}, (ranks, chip_rank)
stages_on = [set(chip_stage[chip_rank == r]) for r in (0, 1)]
if sys.argv[2] == "tp":   # some stage has chips on both ranks: its all-reduces cross the hosts
    assert stages_on[0] & stages_on[1], f"no tensor-parallel group spans the hosts: {chip_rank} {chip_stage}"
else:                     # each rank holds whole stages: the activations cross the hosts
    assert not stages_on[0] & stages_on[1], f"a stage spans the hosts: {chip_rank} {chip_stage}"
PY
}

# The 1-rank references (no mpirun).
"$lpurt" gen-model --preset tiny-mixtral --out moe.h5 --seed 3 > /dev/null
run_args_pp=(--chips 4 --tp 2 --pp 2 --tokens 8)
run_args_tp=(--chips 2 --tp 2 --tokens 8)
run_args_moe=(--model "$work/moe.h5" --chips 4 --tp 4 --tokens 8)
for l in pp tp moe; do
  eval 'args=("${run_args_'$l'[@]}")'
  timeout 60 "$lpurt" run "${args[@]}" --out "r1_$l.h5" > /dev/null
done

# 2. mpirun across the hosts.
printf '%s slots=1\n%s slots=1\n' "$A1" "$A2" > hostfile
export LPURT_NETNS_MAP="$A1=$NS1 $A2=$NS2" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun_2h() {
  timeout "${mpirun_timeout:-60}" ip netns exec "$NS1" mpirun -np 2 --hostfile "$work/hostfile" --bind-to none \
    --mca plm_rsh_agent "$here/netns-rsh.sh" --mca pml ob1 --mca btl tcp,self \
    --mca btl_tcp_if_include "$NET" --mca oob_tcp_if_include "$NET" "$@" < /dev/null 9>&-
}
mpirun_2h sh -c 'echo "rank $OMPI_COMM_WORLD_RANK: namespace $(ip netns identify $$), $(ip -4 -o addr show scope global | awk "{print \$4}")"' \
  > check_mpirun.txt 2>&1 || { cat check_mpirun.txt >&2; fail "mpirun across the namespaces"; }
sort check_mpirun.txt
grep -qx "rank 0: namespace $NS1, $A1/24" check_mpirun.txt && grep -qx "rank 1: namespace $NS2, $A2/24" check_mpirun.txt ||
  fail "mpirun did not place rank 0 on $A1 ($NS1) and rank 1 on $A2 ($NS2)"
for l in pp tp moe; do
  eval 'args=("${run_args_'$l'[@]}")'
  before=$(veth_bytes)
  mpirun_2h "$work/in-ns.sh" "$work/mpirun_$l" "$lpurt" run "${args[@]}" --out "r2_$l.h5" > "mpirun_$l.txt" 2>&1 ||
    { cat "mpirun_$l.txt" >&2; fail "lpurt run ${args[*]} over 2 hosts (mpirun)"; }
  bytes=$(( $(veth_bytes) - before ))
  [ "$bytes" -gt 4096 ] || fail "only $bytes bytes crossed the veth during the 2-host run ($l)"
  ranks_in_both "mpirun_$l"
  same_as_one_rank "r1_$l.h5" "r2_$l.h5"
  placement "r2_$l.h5" "$([ $l = pp ] && echo pp || echo tp)" || fail "placement of r2_$l.h5"
  echo "mpirun, 2 hosts, ${args[*]}: bit-identical to 1 rank; $bytes bytes over the veth (TCP)"
done

# A rank on the other host that dies: the job ends within 10 s and mpirun names it, as on one host
# (tests/jobs/mpi_errors.sh).
start=$SECONDS
rc=0; mpirun_2h "$lpurt" run --chips 2 --tp 1 --pp 2 --inject-crash-rank 1 > crash.txt 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ $((SECONDS - start)) -le 10 ] && grep -q "rank 1 .*signal 9" crash.txt ||
  { cat crash.txt >&2; fail "a crashed rank on host 2: exit $rc after $((SECONDS - start)) s"; }
echo "mpirun, 2 hosts: a rank on host 2 that dies ends the job in $((SECONDS - start)) s"
# A rank that stops participating should fail the job after --step-timeout, but over TCP it hangs: the
# other rank's sends complete eagerly (Open MPI's TCP eager limit is 64 KB), so it blocks in the
# unguarded MPI_Allreduce of Engine::forward (runtime/engine.cpp) where no step timeout applies. Known
# gap (docs/RELIABILITY.md); LPURT_TWO_HOSTS_STALL=1 runs the check.
if [ "${LPURT_TWO_HOSTS_STALL:-0}" = 1 ]; then
  start=$SECONDS
  rc=0; mpirun_timeout=20 mpirun_2h "$lpurt" run --chips 2 --tp 1 --pp 2 --step-timeout 2 --inject-stall-rank 1 > stall.txt 2>&1 || rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ $((SECONDS - start)) -le 10 ] && grep -q "waited .* s for .*on rank 1" stall.txt ||
    { cat stall.txt >&2; fail "a stalled rank on host 2: exit $rc after $((SECONDS - start)) s (124: hung until timeout(1))"; }
  echo "mpirun, 2 hosts: a rank on host 2 that stalls ends the job in $((SECONDS - start)) s"
fi

# 3. Slurm with one slurmd per host. Private config, state, spool, munged and ports (6917/6918), so it
# cannot meet tests/jobs/slurm_study.sh's Slurm on localhost (6817/6818, /etc/slurm/slurm.conf). The
# daemons run under other names (symlinks), so that start-slurm.sh's `pgrep -x slurmctld|munged` does not
# take them for a machine-wide Slurm.
S=$work/slurm
mkdir -p "$S"/{bin,log,state,munge,spool-node1,spool-node2,tmp-node1,tmp-node2}
for d in munged slurmctld slurmd; do ln -s "$(command -v $d)" "$S/bin/lpurt2h-$d"; done
chown munge:munge "$S/munge" && chmod 0755 "$S/munge"
head -c 1024 /dev/urandom > "$S/munge/munge.key"   # one key for both hosts
chown munge:munge "$S/munge/munge.key" && chmod 0400 "$S/munge/munge.key"
sock=$S/munge/munge.sock
export SLURM_CONF=$S/slurm.conf
cat > "$SLURM_CONF" <<CONF
# two-node test Slurm (tests/runtime/two_hosts.sh)
ClusterName=lpurt2h
# "localhost" passes slurmctld's own-hostname check; the address is host 1's
SlurmctldHost=localhost($A1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
MpiDefault=pmix
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool-%n
# the hosts share one filesystem: each node's PMIx client directories in its own TmpFS, or the two
# slurmstepds of a step both create /tmp/spmix_appdir_<uid>_<job>.<step> and the second fails (EEXIST)
TmpFS=$S/tmp-%n
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd-%n.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6917
SlurmdPort=6918
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=node1 NodeAddr=$A1 NodeHostname=node1 CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=1024 State=UNKNOWN
NodeName=node2 NodeAddr=$A2 NodeHostname=node2 CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=1024 State=UNKNOWN
PartitionName=two Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
# munged in namespace 1 too (teardown finds it there); its socket is a path, so host 2 uses it as well
in1 runuser -u munge -- "$S/bin/lpurt2h-munged" --socket="$sock" --key-file="$S/munge/munge.key" \
  --pid-file="$S/munge/munged.pid" --log-file="$S/munge/munged.log" --seed-file="$S/munge/munged.seed" ||
  fail "munged did not start: $(tail -n 3 "$S/munge/munged.log" 2>/dev/null)"
for ns in "$NS1" "$NS2"; do
  timeout 10 ip netns exec "$ns" sh -c "munge -S '$sock' -n < /dev/null | unmunge -S '$sock' > /dev/null" ||
    fail "munge credentials do not work in $ns"
done
in1 "$S/bin/lpurt2h-slurmctld" -i || fail "slurmctld did not start"
# slurmd through nsenter --net, not `ip netns exec`: the latter also remounts /sys for the namespace, which
# hides /sys/fs/cgroup, and slurmd 22.05 then stops with "No filesystem mounted on /sys/fs/cgroup" /
# "Unable to initialize cgroup plugin" even with proctrack/linuxproc.
timeout 30 nsenter --net="/run/netns/$NS1" "$S/bin/lpurt2h-slurmd" -N node1 9>&- || fail "slurmd node1 did not start"
timeout 30 nsenter --net="/run/netns/$NS2" "$S/bin/lpurt2h-slurmd" -N node2 9>&- || fail "slurmd node2 did not start"
state=""
for i in $(seq 150); do  # up to 30 s
  state=$(in1 sinfo -h -N -o %t 2>/dev/null | sort -u | paste -sd, || true)
  [ "$state" = idle ] && break
  sleep 0.2
done
[ "$state" = idle ] || fail "the two Slurm nodes are not idle (states: '$state')"
in1 srun --mpi=list 2>&1 | grep -qw pmix || fail "srun --mpi=list has no pmix"

# Two jobs at once, one rank per node each: the project's slurm/run.sbatch as documented (the TCP settings
# and a recording wrapper as $LPURT come from the submitting environment), and a script of its own.
printf '#!/bin/sh\nexec "%s" "%s" "%s" "$@"\n' "$work/in-ns.sh" "$work/slurm_tp" "$lpurt" > lpurt-in-ns.sh
chmod +x lpurt-in-ns.sh
cat > job.sbatch <<JOB
#!/bin/bash
#SBATCH --job-name=lpurt-two-hosts
set -euo pipefail
# Open MPI under srun: TCP between the hosts, as with mpirun
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=tcp,self OMPI_MCA_btl_tcp_if_include=$NET OMPI_MCA_oob_tcp_if_include=$NET
srun --mpi=pmix --kill-on-bad-exit=1 "$work/in-ns.sh" "$work/slurm_pp" "$lpurt" run ${run_args_pp[*]} --out "$work/rs_pp.h5"
JOB
before=$(veth_bytes)
job_tp=$(OMPI_MCA_pml=ob1 OMPI_MCA_btl=tcp,self OMPI_MCA_btl_tcp_if_include=$NET OMPI_MCA_oob_tcp_if_include=$NET \
  SLURM_KILL_BAD_EXIT=1 LPURT="$work/lpurt-in-ns.sh" \
  in1 sbatch --parsable -N 2 --ntasks-per-node=1 --time=00:05:00 --chdir="$work" --output="$S/slurm-%j.out" \
  "$here/../../slurm/run.sbatch" "${run_args_tp[@]}" --out "$work/rs_tp.h5") || fail "sbatch slurm/run.sbatch"
job_pp=$(in1 sbatch --parsable -N 2 --ntasks-per-node=1 --time=00:05:00 --chdir="$work" --output="$S/slurm-%j.out" \
  job.sbatch) || fail "sbatch job.sbatch"
deadline=$((SECONDS + 90))
while [ -n "$(in1 squeue -h -j "$job_tp,$job_pp" 2>/dev/null)" ]; do
  [ $SECONDS -lt $deadline ] || fail "jobs $job_tp, $job_pp still queued after 90 s"
  sleep 0.25
done
bytes=$(( $(veth_bytes) - before ))
for job in "$job_tp" "$job_pp"; do
  info=$(in1 scontrol -o show job "$job")
  grep -q "JobState=COMPLETED .*ExitCode=0:0" <<< "$info" ||
    fail "job $job: $(grep -o 'JobState=[A-Z_]*\|ExitCode=[0-9:]*' <<< "$info" | paste -sd' ')"
  grep -q " NodeList=node\[1-2\] " <<< "$info" ||
    fail "job $job did not run on node1 and node2: $(grep -o ' NodeList=[^ ]*' <<< "$info")"
  grep -q "2 rank(s)" "$S/slurm-$job.out" || fail "job $job: lpurt did not run on 2 ranks"
done
for l in pp tp; do
  ranks_in_both "slurm_$l"
  grep -q " node1$" "slurm_$l.rank0" && grep -q " node2$" "slurm_$l.rank1" || fail "slurm_$l: ranks not on node1 and node2"
  same_as_one_rank "r1_$l.h5" "rs_$l.h5"
  placement "rs_$l.h5" "$l" || fail "placement of rs_$l.h5"
done
echo "sbatch -N 2 --ntasks-per-node=1 + srun --mpi=pmix on node[1-2]: slurm/run.sbatch ${run_args_tp[*]} (job $job_tp)" \
  "and ${run_args_pp[*]} (job $job_pp) bit-identical to 1 rank; $bytes bytes over the veth"
awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "two hosts: passed in %.1f s (before teardown)\n", b - a }'
