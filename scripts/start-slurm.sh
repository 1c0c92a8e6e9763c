#!/usr/bin/env bash
# Start a single-node Slurm (munged + slurmctld + slurmd) without systemd, as root, for the tests
# (recipe: ../shared/notes/infra.md section 5). scripts/stop-slurm.sh stops what this started.
# It refuses to touch a machine with a Slurm of its own (a running slurmctld, or a slurm.conf it did
# not write).
# LPURT_SLURM_MAX_ARRAY_SIZE sets MaxArraySize (default 1001, Slurm's): the tests lower it to make a
# small study span several job arrays.
# Needs: apt-get install -y --no-install-recommends slurm-wlm munge
set -euo pipefail
MARK="# lpurt single-node test Slurm (scripts/start-slurm.sh)"
if pgrep -x slurmctld >/dev/null; then echo "start-slurm: a slurmctld is already running; not touching it" >&2; exit 3; fi
if [ -s /etc/slurm/slurm.conf ] && ! grep -qF "$MARK" /etc/slurm/slurm.conf; then
  echo "start-slurm: /etc/slurm/slurm.conf exists and was not written by this script; not touching it" >&2; exit 3
fi
NODE=${SLURM_NODE:-localhost}          # slurmd is started with -N "$NODE": real hostname irrelevant
CPUS=${SLURM_CPUS:-8}                  # may exceed real cores (SlurmdParameters=config_overrides)
MEM=${SLURM_MEM_MB:-4096}
RUNDIR=${SLURM_RUNDIR:-/tmp/slurm-ci}  # pid files, logs, spool, state
t0=$(date +%s.%N)
mkdir -p "$RUNDIR"/{log,spool/slurmd,state} /etc/slurm /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null || \
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; }
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key

cat > /etc/slurm/slurm.conf <<CONF
$MARK
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
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
StateSaveLocation=$RUNDIR/state
SlurmdSpoolDir=$RUNDIR/spool/slurmd
SlurmctldPidFile=$RUNDIR/slurmctld.pid
SlurmdPidFile=$RUNDIR/slurmd.pid
SlurmctldLogFile=$RUNDIR/log/slurmctld.log
SlurmdLogFile=$RUNDIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
MaxArraySize=${LPURT_SLURM_MAX_ARRAY_SIZE:-1001}
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
# Optional cgroup.conf. It is NOT read with proctrack/linuxproc + task/none; slurm ran fine without it.
cat > /etc/slurm/cgroup.conf <<CONF
CgroupPlugin=autodetect
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
CONF

rm -f "$RUNDIR/started-munged"
if ! pgrep -x munged >/dev/null; then runuser -u munge -- /usr/sbin/munged; touch "$RUNDIR/started-munged"; fi
for i in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n </dev/null | unmunge >/dev/null || { echo "munge not working" >&2; exit 1; }
/usr/sbin/slurmctld -i          # -i: ignore saved state
/usr/sbin/slurmd -N "$NODE"
state=""
for i in $(seq 300); do           # up to 60 s
  state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.2
done
if [ "$state" != idle ]; then
  echo "slurm node not idle (state='$state')" >&2; sinfo -R >&2 || true
  tail -n 30 "$RUNDIR"/log/*.log >&2; exit 1
fi
awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$NODE" 'BEGIN{printf "slurm up: node %s idle after %.1f s\n", n, b-a}'
