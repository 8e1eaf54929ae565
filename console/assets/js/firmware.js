// Placeholder: the firmware page is being written.
import { start } from './layout.js';

await start('firmware');
