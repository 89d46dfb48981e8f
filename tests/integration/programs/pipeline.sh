# A shell pipeline whose two commands are parts on other nodes, joined by a pipe through their stand-ins:
# seq writes far more than the pipe and the flow-control window hold, a slow reader sums it.
echo "pid $$"
seq 1 2000000 | /usr/bin/python3 -c "
import sys, time
s = 0
for i, l in enumerate(sys.stdin):
    s += int(l)
    if i % 20000 == 0:
        time.sleep(0.05)
print(s)"
