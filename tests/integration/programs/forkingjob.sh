# A shell job that forks all the time: three background workers, each running a command substitution
# (a fork and an exec) and a sleep (another) forty times. Under rfork run (spread) each worker runs on
# another node and places its own forks from there, so forks are always in flight. Prints "pid P" first.
echo "pid $$"
for i in 1 2 3; do
    ( s=0; for j in $(seq 40); do v=$(expr $i \* $j); s=$((s + v)); sleep 0.05; done; echo "worker $i $s" ) &
done
wait
echo done
