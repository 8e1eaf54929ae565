// Placeholder: the rollouts page is being written.
import { start } from './layout.js';

await start('rollouts');
