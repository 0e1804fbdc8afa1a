# bench/plot.gp - draws bench/results.svg from bench/results.dat.
#
#   gnuplot bench/plot.gp                       (from the top of the tree)
#   gnuplot -e "datafile='x.dat'; outfile='x.svg'" bench/plot.gp
#
# bench/run.sh runs it after writing results.dat, whose blocks (index N)
# each start with a line naming their columns:
#   0 echo round trips/s   1 echo server CPU us/rt   2 p50 us   3 p99 us
#   4 echo client CPU us/rt   5 sleep wall s   6 sleep peak RSS MiB
#   7 micro ns/op   8 echo server busy (CPUs)   9 echo client busy (CPUs)
#   10 echo CPUs lost to other tenants

if (!exists("datafile")) datafile = 'bench/results.dat'
if (!exists("outfile")) outfile = 'bench/results.svg'

set terminal svg size 1500,900 dynamic font 'sans,11' background '#ffffff'
set termoption noenhanced
set output outfile
set datafile missing '-'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key below horizontal samplen 2
set yrange [0:*]
set linetype 1 lc rgb '#1b6ac9'
set linetype 2 lc rgb '#e07b00'
set linetype 3 lc rgb '#3a9a3a'
set linetype 4 lc rgb '#b03030'
set linetype 5 lc rgb '#888888'

set multiplot layout 2,3 title 'corio against its baselines (' . datafile . ')'

set title 'echo: round trips per second (higher is better)'
plot datafile index 0 using 2:xtic(1) title columnheader(2), \
     '' index 0 using 3 title columnheader(3), \
     '' index 0 using 4 title columnheader(4), \
     '' index 0 using 5 title columnheader(5)

set title 'echo: server CPU per round trip, us (lower is better)'
plot datafile index 1 using 2:xtic(1) title columnheader(2), \
     '' index 1 using 3 title columnheader(3), \
     '' index 1 using 4 title columnheader(4), \
     '' index 1 using 5 title columnheader(5)

set title 'echo: p99 latency, us (lower is better)'
set logscale y
set yrange [*:*]
plot datafile index 3 using 2:xtic(1) title columnheader(2), \
     '' index 3 using 3 title columnheader(3), \
     '' index 3 using 4 title columnheader(4), \
     '' index 3 using 5 title columnheader(5)

set title 'sleeps: wall time until all return, s (log)'
plot datafile index 5 using 2:xtic(1) title columnheader(2), \
     '' index 5 using 3 title columnheader(3), \
     '' index 5 using 4 title columnheader(4) lt 4, \
     '' index 5 using 5 title columnheader(5) lt 5

set title 'sleeps: peak RSS, MiB (log)'
plot datafile index 6 using 2:xtic(1) title columnheader(2), \
     '' index 6 using 3 title columnheader(3), \
     '' index 6 using 4 title columnheader(4) lt 4, \
     '' index 6 using 5 title columnheader(5) lt 5

set title 'micro: ns per operation (log; lower is better)'
set xtics font ',9'
plot datafile index 7 using 2:xtic(1) title columnheader(2), \
     '' index 7 using 3 title columnheader(3) lt 5

unset multiplot
