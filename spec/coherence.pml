/* The coherence protocol of rfork's shared memory (Sources/RforkProtocol/Coherence.swift), for one page,
 * checked by SPIN over every interleaving: N nodes, node 0 the manager (the region's home), each node
 * doing OPS reads or writes. Links are ordered per direction between two nodes, as TCP is.
 *
 * Checked after every step: a read sees the last write, at most one node can write and then no other
 * can read (check); and no node waits for a page forever (an invalid end state otherwise). A node given
 * the page runs the access it faulted on before it can lose the page again (the minimum hold). An owner
 * that wrote the page hands it over for writing even to a reader (migratory sharing); one that did not
 * shares it. A page the manager sends (node 0's own copy, or the directory's go-ahead) ends its transaction
 * as it is sent (SENT, or at once): the requester answers DONE only for pages from other nodes.
 * Run: make model-check (spin -a, cc -DSAFETY, ./pan). */

#ifndef N
#define N 3
#endif
#ifndef OPS
#define OPS 2
#endif
#define NONE 255

mtype = { REQ, FETCH, INV, INVD, PAGE, DONE, SENT };

/* node -> node, index from*N+to: type, requester, write, withData, value */
chan link[N*N] = [4] of { mtype, byte, bool, bool, byte };
/* node -> the manager's directory, index from: type, write */
chan dlink[N] = [4] of { mtype, bool };

byte access[N];   /* 0 nothing, 1 read, 2 write */
byte copy[N];     /* the node's copy of the page, NONE when dropped */
bool clean[N];    /* may write, has not written since it got the page (protected locally until it does) */
byte latest;      /* the value of the last write */

/* Single writer or many readers, and every readable copy is the last write. */
inline check() {
  c = 0; writers = 0; readers = 0;
  do
  :: c < N ->
       if :: access[c] == 2 -> writers++ :: access[c] == 1 -> readers++ :: else -> skip fi;
       if :: access[c] >= 1 -> assert(copy[c] == latest) :: else -> skip fi;
       c++
  :: else -> break
  od;
  assert(writers <= 1 && (writers == 0 || readers == 0))
}

/* What a node does with a message asking it to give the page up, or giving it the page. */
inline serve(me, src, t, r, w, d, v) {
  if
  :: t == FETCH ->
       assert(access[me] >= 1 && copy[me] != NONE);
       /* A written page goes on for writing even to a reader; an unwritten one is shared. */
       if
       :: access[me] == 2 && !clean[me] -> w = true
       :: else -> skip
       fi;
       clean[me] = false;
       link[me*N+r]!PAGE,r,w,true,copy[me];
       if
       :: w -> access[me] = 0; copy[me] = NONE
       :: else -> access[me] = 1
       fi;
       if
       :: me == 0 -> dlink[0]!SENT,w
       :: else -> skip
       fi
  :: t == INV -> access[me] = 0; copy[me] = NONE; clean[me] = false; dlink[me]!INVD,false
  :: t == PAGE ->
       assert(pending);
       if
       :: d -> copy[me] = v
       :: else -> assert(copy[me] == latest)
       fi;
       if :: w -> access[me] = 2 :: else -> access[me] = 1 fi;
       clean[me] = w && !want;
       pending = false;
       if
       :: src != 0 -> dlink[me]!DONE,w
       :: else -> skip
       fi;
       /* The process that faulted runs its access before the page can be taken again (the minimum hold). */
       if
       :: want -> assert(access[me] == 2); latest++; copy[me] = latest; clean[me] = false
       :: else -> assert(copy[me] == latest)
       fi;
       ops++
  fi;
  check()
}

inline receive_any(me) {
  if
  :: link[0*N+me]?t,r,w,d,v -> atomic { serve(me, 0, t, r, w, d, v) }
  :: link[1*N+me]?t,r,w,d,v -> atomic { serve(me, 1, t, r, w, d, v) }
  :: link[2*N+me]?t,r,w,d,v -> atomic { serve(me, 2, t, r, w, d, v) }
  fi
}

proctype Node(byte me) {
  byte ops = 0;
  bool pending = false;
  bool want;
  mtype t; byte r; bool w; bool d; byte v;
  byte c, writers, readers;
end_idle:
  do
  :: atomic {
       ops < OPS ->
       if :: want = true :: want = false fi;
       if
       :: want && access[me] == 2 -> latest++; copy[me] = latest; clean[me] = false; ops++
       :: !want && access[me] >= 1 -> assert(copy[me] == latest); ops++
       :: else -> pending = true; dlink[me]!REQ,want
       fi;
       check()
     }
     if
     :: pending ->
waiting:
        do
        :: pending -> receive_any(me)
        :: !pending -> break
        od
     :: else -> skip
     fi
  :: receive_any(me)
  od
}

proctype Directory() {
  byte owner = 0;
  byte holders = 1;          /* bit i: node i holds a current copy */
  bool busy = false;
  byte req; bool rw;
  byte awaiting = 0;
  byte from = NONE;
  bool started = false;
  chan queue = [N] of { byte, bool };
  byte queued = 0;
  mtype t; bool w; byte f; byte i;
end:
  do
  :: atomic {
       if
       :: dlink[0]?t,w -> f = 0
       :: dlink[1]?t,w -> f = 1
       :: dlink[2]?t,w -> f = 2
       fi;
       if
       :: t == REQ -> queue!f,w; queued++
       :: t == INVD -> assert(awaiting & (1 << f)); awaiting = awaiting & ~(1 << f); holders = holders & ~(1 << f)
       :: t == DONE ->
            /* A read may end with the page given for writing (its owner had written it). */
            assert(busy && started && f == req && from != 0 && (w == rw || (w && from != NONE)));
            if
            :: w -> owner = f; holders = 1 << f
            :: else -> holders = holders | (1 << f)
            fi;
            busy = false
       :: t == SENT ->
            /* Node 0 (the manager) sent its own copy: the transaction is over. */
            assert(busy && started && f == 0 && from == 0 && (w || !rw));
            if
            :: w -> owner = req; holders = 1 << req
            :: else -> holders = holders | (1 << req)
            fi;
            busy = false
       fi;
       do
       :: busy && !started && awaiting == 0 ->
            started = true;
            if
            :: from != NONE -> link[0*N+from]!FETCH,req,rw,false,0
            :: else ->
                 /* A go-ahead ends the transaction as it is sent. */
                 link[0*N+req]!PAGE,req,rw,false,0;
                 if
                 :: rw -> owner = req; holders = 1 << req
                 :: else -> holders = holders | (1 << req)
                 fi;
                 busy = false
            fi
       :: !busy && queued > 0 ->
            queue?req,rw; queued--;
            busy = true; started = false; awaiting = 0;
            if
            :: holders & (1 << req) -> from = NONE
            :: else -> from = owner
            fi;
            if
            :: rw ->
                 i = 0;
                 do
                 :: i < N ->
                      if
                      :: (holders & (1 << i)) && i != req && (from == NONE || i != owner) ->
                           awaiting = awaiting | (1 << i); link[0*N+i]!INV,0,false,false,0
                      :: else -> skip
                      fi;
                      i++
                 :: else -> break
                 od
            :: else -> skip
            fi
       :: else -> break
       od
     }
  od
}

init {
  byte i = 1;
  atomic {
    access[0] = 2; copy[0] = 0; latest = 0;
    do :: i < N -> access[i] = 0; copy[i] = NONE; i++ :: else -> break od;
    run Directory();
    i = 0;
    do :: i < N -> run Node(i); i++ :: else -> break od
  }
}
