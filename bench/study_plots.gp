# bench/study's plots, run by gnuplot in DIR/plot/ over the data files that
# study_model.py analyse writes there (map.dat, axes.gp, vs_s.*, vs_rate.*).
set terminal pngcairo size 1100,480 noenhanced
set output '../speedup_map.png'
set multiplot layout 1,2 title 'SparkNet speedup at S = 0: N1 / (tau M), by K and tau'
load 'axes.gp'
set xlabel 'tau (steps per round)'
set ylabel 'K (workers)'
unset key
set title 'plain averaging'
plot 'map.dat' index 0 using 1:2:(0.5):(0.5):3 with boxxyerror fs solid 1.0 lc palette, \
     '' index 0 using 1:2:(sprintf('%.2f', $3)) with labels
set title 'outer Nesterov (0.7, 0.9)'
plot 'map.dat' index 1 using 1:2:(0.5):(0.5):3 with boxxyerror fs solid 1.0 lc palette, \
     '' index 1 using 1:2:(sprintf('%.2f', $3)) with labels
unset multiplot
reset
set terminal pngcairo size 900,600 noenhanced
set output '../speedup_vs_s.png'
set logscale xy
set format x '%g'
set format y '%g'
set xlabel 'S: communication per round (s); dotted: the S values studied'
set ylabel 'speedup over one worker'
set key bottom left
set grid
load 'vs_s.gp'
set output '../speedup_vs_rate.png'
set xlabel 'link rate (Mbit/s), S = bytes per round x 8 / rate, --compress none'
set key top left
load 'vs_rate.gp'
